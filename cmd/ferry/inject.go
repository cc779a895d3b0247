package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ferrymesh/ferry/deploy/inject"
)

// fileList is a repeatable -f flag.
type fileList []string

func (f *fileList) String() string     { return strings.Join(*f, ",") }
func (f *fileList) Set(v string) error { *f = append(*f, v); return nil }

// repeatable tells parseFlags that -f may be given more than once.
func (f *fileList) repeatable() {}

// injectorFlags registers the injector's defaults on fs; the returned
// function builds the injector after parsing.
func injectorFlags(fs *flag.FlagSet) func() (*inject.Injector, error) {
	def := inject.DefaultImage
	if version != "dev" {
		def = "ferrymesh/ferry:" + version
	}
	image := fs.String("image", def, "ferry image to inject (annotation ferry.io/proxy-image overrides)")
	pull := fs.String("image-pull-policy", "", "Always, IfNotPresent or Never (default: Kubernetes' default)")
	consul := fs.String("consul-addr", inject.DefaultConsulAddr, "Consul agent address for CONSUL_HTTP_ADDR; $(HOST_IP) is the node (annotation ferry.io/consul-addr overrides)")
	otel := fs.String("otel-endpoint", "", "OTLP endpoint for OTEL_EXPORTER_OTLP_ENDPOINT (annotation ferry.io/otel-endpoint overrides)")
	noNative := fs.Bool("no-native-sidecar", false, "inject ferry as the first regular container by default, for clusters before Kubernetes 1.29 (annotation ferry.io/native-sidecar overrides)")
	// A string read by the injector's own parser, not a Go duration: it
	// takes what the annotation and the chart's schema take, no more.
	preStop := fs.String("pre-stop-sleep", inject.DefaultPreStopSleep.String(), "ferry's preStop sleep, whole seconds up to an hour (90, 90s, 1m30s, 1h); 0: no preStop hook, for clusters before Kubernetes 1.30, where the sleep action is off (annotation ferry.io/pre-stop-sleep overrides)")
	return func() (*inject.Injector, error) {
		sleep, err := inject.ParsePreStopSleep(*preStop)
		if err != nil {
			return nil, fmt.Errorf("--pre-stop-sleep %q: %v", *preStop, err)
		}
		if sleep == 0 {
			sleep = -1 // Options: zero is the default, negative is none
		}
		inj, err := inject.New(inject.Options{
			PreStopSleep:         sleep,
			Image:                *image,
			ImagePullPolicy:      inject.PullPolicy(*pull),
			ConsulAddr:           *consul,
			OTelEndpoint:         *otel,
			DisableNativeSidecar: *noNative,
		})
		// Name the flag the user typed, not the option behind it.
		var oe *inject.OptionError
		if errors.As(err, &oe) {
			if name, ok := optionFlags[oe.Field]; ok {
				return nil, fmt.Errorf("%s %q: %v", name, oe.Value, oe.Err)
			}
		}
		return inj, err
	}
}

// optionFlags are the flags injectorFlags sets inject.Options from, by
// field.
var optionFlags = map[string]string{
	"Image":           "--image",
	"ImagePullPolicy": "--image-pull-policy",
	"ConsulAddr":      "--consul-addr",
	"OTelEndpoint":    "--otel-endpoint",
	"PreStopSleep":    "--pre-stop-sleep",
}

// cmdInject reads Kubernetes YAML from -f files (or stdin) and writes it
// back with ferry injected. Nothing is written to stdout unless every input
// was read and parsed.
func cmdInject(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flagSet("inject", "ferry inject [-f FILE ...] [flags]\n\nWrites the manifests with ferry injected to stdout, and why an object was not injected to stderr.", stderr)
	var files fileList
	fs.Var(&files, "f", "YAML or JSON file, directory (its *.yaml, *.yml, *.json) or - for stdin; repeatable (default: stdin)")
	newInjector := injectorFlags(fs)
	if code, ok := parseFlags(fs, args, stdout); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "ferry inject: unexpected argument %q (files go after -f)\n", fs.Arg(0))
		return exitConfig
	}
	inj, err := newInjector()
	if err != nil {
		fmt.Fprintf(stderr, "ferry inject: %v\n", err)
		return exitConfig
	}
	if len(files) == 0 {
		files = fileList{"-"}
	}
	sources, err := expandSources(files)
	if err != nil {
		fmt.Fprintf(stderr, "ferry inject: %v\n", err)
		return exitFail
	}
	var out bytes.Buffer
	counts := map[inject.Outcome]int{}
	stdinRead := false
	for i, src := range sources {
		var data []byte
		if src == "-" {
			if stdinRead {
				fmt.Fprintln(stderr, "ferry inject: - (stdin) given twice")
				return exitConfig
			}
			stdinRead = true
			data, err = io.ReadAll(stdin)
		} else {
			data, err = os.ReadFile(src)
		}
		if err != nil {
			fmt.Fprintf(stderr, "ferry inject: %v\n", err)
			return exitFail
		}
		name := src
		if src == "-" {
			name = "stdin"
		}
		injected, reps, err := inj.InjectYAML(data)
		if err != nil {
			fmt.Fprintf(stderr, "ferry inject: %s: %v\n", name, err)
			return exitFail
		}
		for _, r := range reps {
			counts[r.Outcome]++
			if r.Outcome == inject.Refused {
				for _, l := range r.Lines() {
					fmt.Fprintf(stderr, "ferry inject: %s: %s\n", name, l)
				}
			}
			for _, w := range r.Warnings {
				fmt.Fprintf(stderr, "ferry inject: %s: %s: warning: %s\n", name, r.Object(), w)
			}
		}
		if i > 0 {
			if out.Len() > 0 && !bytes.HasSuffix(out.Bytes(), []byte("\n")) {
				out.WriteByte('\n')
			}
			out.WriteString("---\n")
		}
		out.Write(injected)
	}
	if _, err := stdout.Write(out.Bytes()); err != nil {
		fmt.Fprintf(stderr, "ferry inject: writing the output: %v\n", err)
		return exitFail
	}
	fmt.Fprintf(stderr, "ferry inject: %d injected, %d not injected, %d other objects passed through\n",
		counts[inject.Injected], counts[inject.Refused], counts[inject.Skipped])
	return exitOK
}

// expandSources replaces each directory by its manifest files, sorted.
func expandSources(files []string) ([]string, error) {
	var out []string
	for _, f := range files {
		if f == "-" {
			out = append(out, f)
			continue
		}
		fi, err := os.Stat(f)
		if err != nil {
			return nil, err
		}
		if !fi.IsDir() {
			out = append(out, f)
			continue
		}
		entries, err := os.ReadDir(f)
		if err != nil {
			return nil, err
		}
		var names []string
		for _, e := range entries {
			switch strings.ToLower(filepath.Ext(e.Name())) {
			case ".yaml", ".yml", ".json":
				if !e.IsDir() {
					names = append(names, filepath.Join(f, e.Name()))
				}
			}
		}
		sort.Strings(names)
		out = append(out, names...)
	}
	return out, nil
}
