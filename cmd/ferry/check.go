package main

import (
	"fmt"
	"io"
	"os"

	"github.com/ferrymesh/ferry/sidecar"
)

// cmdCheck loads a config as ferry run would, and serves nothing: the
// YAML and every rule the loader applies (each error names its key), and
// the telemetry settings with the OTEL_* environment, and the Consul
// client's with the CONSUL_* environment when anything talks to Consul. It
// contacts nothing (Consul's services are not resolved) and creates
// nothing (the access log's file is checked, not created). A config it passes is
// one ferry run starts with, unless a listener's address is taken or
// Consul refuses it; one it fails, ferry run refuses with the same errors.
func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := flagSet("check", "ferry check --config FILE | --config-env NAME", stderr)
	path, configEnv := configFlags(fs)
	if code, ok := parseFlags(fs, args, stdout); !ok {
		return code
	}
	if !noArgs(fs, stderr) || !oneConfig(fs, *path, *configEnv, stderr) {
		return exitConfig
	}
	var cfg *sidecar.Config
	var err error
	source := *path
	if *path != "" {
		var text []byte
		if text, err = os.ReadFile(*path); err != nil {
			err = fmt.Errorf("config: %w", err)
		} else if cfg, err = sidecar.ParseConfig(text); err != nil {
			err = fmt.Errorf("config %s:\n%w", *path, err)
		}
	} else {
		cfg, err = configFromEnv(*configEnv)
		source = "from $" + *configEnv
	}
	if err != nil {
		fmt.Fprintf(stderr, "ferry: %v\n", err)
		return exitConfig
	}
	if err := sidecar.CheckTelemetry(cfg); err != nil {
		fmt.Fprintf(stderr, "ferry: config %s:\n%v\n", source, err)
		return exitConfig
	}
	if err := sidecar.CheckConsul(cfg); err != nil {
		fmt.Fprintf(stderr, "ferry: config %s:\n%v\n", source, err)
		return exitConfig
	}
	fmt.Fprintf(stdout, "config %s is valid: %s\n", source, summary(cfg))
	// What ferry run warns of as it loads the config.
	for _, name := range cfg.UnusedServices() {
		fmt.Fprintf(stdout, "warning: services.%s: %s\n", name, sidecar.UnusedServiceWarning)
	}
	return exitOK
}

// summary says in one line what a valid config serves.
func summary(cfg *sidecar.Config) string {
	routes := 0
	if cfg.Outbound != nil {
		routes = len(cfg.Outbound.Routes)
	}
	consul := 0
	for _, s := range cfg.Services {
		if s.UsesConsul() {
			consul++
		}
	}
	s := fmt.Sprintf("%d outbound routes, %d services (%d from Consul)", routes, len(cfg.Services), consul)
	if cfg.Inbound != nil {
		s += ", inbound to " + cfg.Inbound.App
	}
	if cfg.Register != nil {
		s += ", registered in Consul as " + cfg.Register.Name
	}
	return s
}
