package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Proxy names, in report order.
const (
	pFerry   = "ferry"
	pStd     = "stdlib"
	pL4      = "l4-splice"
	pFloor   = "go-h1-floor"
	pEpoll   = "go-epoll-floor"
	pNginx   = "nginx"
	pHAProxy = "haproxy"
	pTraced  = "ferry+tracing"
	pStdOTel = "stdlib+otelhttp"
	pDirect  = "direct"
)

// Measurement phases, for --phases, in the order they run.
const (
	phSeq     = "seq"
	phBulk    = "bulk"
	phConc    = "conc"
	phSmall   = "small"
	phUploads = "uploads"
	phChunked = "chunked"
	phLatency = "latency"
	phTracing = "tracing"
)

var allPhases = []string{phSeq, phBulk, phConc, phSmall, phUploads, phChunked, phLatency, phTracing}

var allProxies = []string{pFerry, pStd, pL4, pFloor, pEpoll, pNginx, pHAProxy}

// fleet is every process of one run.
type fleet struct {
	dir     string
	origin  *proc
	proxies map[string]*proc // by name, including the traced variants
	order   []string         // proxies measured, report order (without the traced variants)
	otlp    *otlpSink
	all     []*proc
}

func (f *fleet) stop() {
	for i := len(f.all) - 1; i >= 0; i-- {
		f.all[i].stop()
	}
	if f.otlp != nil {
		f.otlp.close()
	}
}

// startFleet starts the origin, the OTLP sink and each proxy on its own
// loopback port, all configured in dir, and waits until each answers.
func startFleet(ctx context.Context, cfg *config, dir string) (*fleet, error) {
	f := &fleet{dir: dir, proxies: map[string]*proc{}}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own binary: %w", err)
	}
	ports, err := freePorts(14)
	if err != nil {
		return nil, err
	}
	next := func() string {
		p := ports[0]
		ports = ports[1:]
		return fmt.Sprintf("127.0.0.1:%d", p)
	}
	ok := false
	defer func() {
		if !ok {
			f.stop()
		}
	}()
	if f.otlp, err = startOTLPSink(); err != nil {
		return nil, err
	}
	originAddr := next()
	f.origin, err = startProc(ctx, "origin", originAddr, filepath.Join(dir, "origin.log"),
		[]string{cfg.nodeBin, "origin", "-listen", originAddr}, nil)
	if err != nil {
		return nil, err
	}
	f.all = append(f.all, f.origin)
	if err := f.origin.waitHTTP("http://"+originAddr+"/?size=1", 10*time.Second); err != nil {
		return nil, err
	}

	want := map[string]bool{}
	for _, n := range cfg.proxies {
		want[n] = true
	}
	if cfg.tracing {
		want[pTraced] = true
		want[pStdOTel] = want[pStd]
	}
	for _, name := range append(append([]string{}, allProxies...), pTraced, pStdOTel) {
		if !want[name] {
			continue
		}
		addr := next()
		var p *proc
		ready := "http://" + addr + "/?size=1"
		switch name {
		case pFerry, pTraced:
			admin := next()
			path := filepath.Join(dir, strings.ReplaceAll(name, "+", "-")+".yaml")
			if err := os.WriteFile(path, []byte(ferryConfig(admin, addr, originAddr, name == pTraced, f.otlp.addr)), 0o600); err != nil {
				return nil, fmt.Errorf("%s: write config: %w", name, err)
			}
			p, err = startProc(ctx, name, addr, path+".log", []string{cfg.ferryBin, "run", "--config", path, "--config-poll", "0", "--log-level", "warn"}, nil)
			if err == nil {
				f.all = append(f.all, p)
				err = p.waitHTTP("http://"+admin+"/ready", 15*time.Second)
			}
		case pStd:
			p, err = startProc(ctx, name, addr, filepath.Join(dir, "stdlib.log"), []string{cfg.nodeBin, "stdproxy", "-listen", addr, "-upstream", originAddr}, nil)
		case pStdOTel:
			p, err = startProc(ctx, name, addr, filepath.Join(dir, "stdlib-otel.log"), []string{self, "stdproxy-otel", "-listen", addr, "-upstream", originAddr, "-otlp", "http://" + f.otlp.addr}, nil)
		case pL4:
			p, err = startProc(ctx, name, addr, filepath.Join(dir, "l4.log"), []string{cfg.nodeBin, "l4relay", "-listen", addr, "-upstream", originAddr}, nil)
		case pFloor:
			p, err = startProc(ctx, name, addr, filepath.Join(dir, "h1floor.log"), []string{cfg.nodeBin, "h1floor", "-listen", addr, "-upstream", originAddr}, nil)
		case pEpoll:
			p, err = startProc(ctx, name, addr, filepath.Join(dir, "h1epoll.log"), []string{cfg.nodeBin, "h1epoll", "-listen", addr, "-upstream", originAddr}, nil)
		case pNginx:
			var argv []string
			argv, err = nginxSetup(cfg.nginxBin, dir, addr, originAddr)
			if err == nil {
				p, err = startProc(ctx, name, addr, filepath.Join(dir, "nginx.log"), argv, nil)
			}
		case pHAProxy:
			path := filepath.Join(dir, "haproxy.cfg")
			if err = os.WriteFile(path, []byte(haproxyConfig(addr, originAddr)), 0o600); err == nil {
				p, err = startProc(ctx, name, addr, filepath.Join(dir, "haproxy.log"), []string{cfg.haproxyBin, "-db", "-f", path}, nil)
			}
		}
		if err != nil {
			return nil, err
		}
		if name != pFerry && name != pTraced {
			f.all = append(f.all, p)
		}
		if err := p.waitHTTP(ready, 15*time.Second); err != nil {
			return nil, err
		}
		f.proxies[name] = p
		if name != pTraced && name != pStdOTel {
			f.order = append(f.order, name)
		}
	}
	ok = true
	return f, nil
}

// ferryConfig is a plain outbound listener with static endpoints to the
// origin, access log off; the traced variant exports every span over
// OTLP/HTTP to the local sink.
func ferryConfig(admin, listen, origin string, traced bool, otlp string) string {
	tel := "telemetry: { access_log: off, traces_exporter: none }\n"
	if traced {
		tel = fmt.Sprintf(`telemetry:
  access_log: off
  traces_exporter: otlp
  protocol: http/protobuf
  endpoint: http://%s
  sampler: always_on
`, otlp)
	}
	return fmt.Sprintf(`# written by ferrybench
admin: { listen: %s }
outbound:
  listen: %s
  routes:
    - { path_prefix: /, service: origin }
services:
  origin:
    endpoints: [%s]
    protocol: http1
%sshutdown: { grace: 2s }
`, admin, listen, origin, tel)
}

// nginxSetup writes a plain reverse-proxy config (proxy_buffering and
// request buffering at their defaults, on) and returns the command line.
func nginxSetup(bin, dir, listen, origin string) ([]string, error) {
	nd := filepath.Join(dir, "nginx")
	for _, sub := range []string{"", "client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		if err := os.MkdirAll(filepath.Join(nd, sub), 0o777); err != nil {
			return nil, fmt.Errorf("nginx: temp dir: %w", err)
		}
		// Workers run as nobody and write temp files here.
		if err := os.Chmod(filepath.Join(nd, sub), 0o777); err != nil {
			return nil, fmt.Errorf("nginx: temp dir: %w", err)
		}
	}
	conf := fmt.Sprintf(`# written by ferrybench
daemon off;
master_process on;
worker_processes auto;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path %[1]s/client_body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  keepalive_requests 1000000;
  upstream origin {
    server %[2]s;
    keepalive 512;
  }
  server {
    listen %[3]s;
    client_max_body_size 0;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`, nd, origin, listen)
	path := filepath.Join(nd, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("nginx: write config: %w", err)
	}
	if out, err := exec.Command(bin, "-t", "-p", nd, "-c", path).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("nginx -t: %v: %s", err, out)
	}
	return []string{bin, "-p", nd, "-c", path}, nil
}

// haproxyConfig is a plain HTTP-mode reverse proxy with keep-alive both
// sides and no logging.
func haproxyConfig(listen, origin string) string {
	return fmt.Sprintf(`# written by ferrybench
global
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 120s
frontend fe
  bind %s
  default_backend be
backend be
  server origin %s maxconn 0
`, listen, origin)
}
