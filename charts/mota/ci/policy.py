#!/usr/bin/env python3
"""Policy checks on the chart's rendered manifests (`helm template` output).

    policy.py RENDERED.yaml CONFIG_RS

What kubeconform-style schema validation cannot see: every container pinned, with
resources, probes and a locked-down security context; a disruption budget whenever more
than one replica runs; a stable and distinct MQTT client id per replica; a configuration
file the backend accepts (only keys that are fields of its `Config` in CONFIG_RS, only
strings, integers and booleans); the ServiceMonitor (no bundled schema) pointing at the
Service's port and `/metrics`; the Ingress routing neither `/metrics` nor an unknown
port. Prints one line per check and exits 1 if any failed. Needs PyYAML; Python 3.11+.
"""

import hashlib
import re
import sys
import tomllib

import yaml

failures = []
passes = 0


def check(ok, what):
    global passes
    if ok:
        passes += 1
        print(f"  ok   {what}")
    else:
        failures.append(what)
        print(f"  FAIL {what}")


def documents(text):
    """[(source template, raw text, parsed object)] of a `helm template` output."""
    out = []
    for chunk in re.split(r"^---\s*$", text, flags=re.M):
        source = re.search(r"^# Source: (\S+)", chunk, flags=re.M)
        body = re.sub(r"^# Source: .*\n", "", chunk, count=1, flags=re.M).lstrip("\n")
        obj = yaml.safe_load(body)
        if obj:
            out.append((source.group(1) if source else "?", body, obj))
    return out


def config_fields(config_rs):
    """Field names of `pub struct Config` in backend/src/config.rs: the file's keys."""
    text = open(config_rs).read()
    body = re.search(r"pub struct Config \{(.*?)\n\}", text, flags=re.S).group(1)
    return set(re.findall(r"^\s*pub (\w+):", body, flags=re.M)) - {"config"}


def pod_specs(objs):
    """(kind/name, pod spec, pod metadata) of every workload."""
    for obj in objs:
        kind = obj["kind"]
        if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            template = obj["spec"]["template"]
            yield f"{kind}/{obj['metadata']['name']}", template["spec"], template["metadata"], obj
        elif kind == "CronJob":
            template = obj["spec"]["jobTemplate"]["spec"]["template"]
            yield f"{kind}/{obj['metadata']['name']}", template["spec"], template["metadata"], obj


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def main(rendered, config_rs):
    docs = documents(open(rendered).read())
    objs = [obj for _, _, obj in docs]
    by_kind = {}
    for obj in objs:
        by_kind.setdefault(obj["kind"], []).append(obj)

    for where, spec, meta, owner in pod_specs(objs):
        long_running = owner["kind"] != "Job" and owner["kind"] != "CronJob"
        pod_sc = spec.get("securityContext") or {}
        check(spec.get("automountServiceAccountToken") is False, f"{where}: no ServiceAccount token mounted")
        for c in spec.get("initContainers", []) + spec["containers"]:
            name = f"{where} container {c['name']}"
            image = c["image"]
            check("@sha256:" in image or (":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest")),
                  f"{name}: image pinned ({image})")
            res = c.get("resources") or {}
            req, lim = res.get("requests") or {}, res.get("limits") or {}
            check({"cpu", "memory"} <= req.keys() and {"cpu", "memory"} <= lim.keys(),
                  f"{name}: cpu and memory requests and limits")
            sc = c.get("securityContext") or {}

            def effective(key):
                return sc.get(key, pod_sc.get(key))

            check(effective("runAsNonRoot") is True and effective("runAsUser") not in (0, None),
                  f"{name}: runs as non-root, numeric uid {effective('runAsUser')}")
            check(sc.get("readOnlyRootFilesystem") is True, f"{name}: read-only root file system")
            check(sc.get("allowPrivilegeEscalation") is False and not sc.get("privileged"),
                  f"{name}: no privilege escalation")
            check("ALL" in (sc.get("capabilities") or {}).get("drop", []) and
                  not (sc.get("capabilities") or {}).get("add"), f"{name}: drops ALL capabilities")
            check((effective("seccompProfile") or {}).get("type") == "RuntimeDefault", f"{name}: seccomp RuntimeDefault")
            mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            data = mounts.get("/var/lib/mota")
            check(data is not None and "emptyDir" in volumes.get(data["name"], {}),
                  f"{name}: data directory /var/lib/mota is an emptyDir")
            secret_mounts = [m for m in mounts.values() if "secret" in volumes.get(m["name"], {})]
            check(all(m.get("readOnly") for m in secret_mounts),
                  f"{name}: {len(secret_mounts)} Secret volume(s) mounted read-only")
            if long_running:
                probes = {p: (c.get(p) or {}).get("httpGet", {}).get("path") for p in
                          ("startupProbe", "livenessProbe", "readinessProbe")}
                check(probes == {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"},
                      f"{name}: startup/liveness /healthz, readiness /readyz ({probes})")
                env = {e["name"]: e for e in c.get("env", [])}
                pod_name = env.get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
                client_id = env.get("MOTA_MQTT_CLIENT_ID", {}).get("value", "")
                check(pod_name == "metadata.name" and client_id.endswith("$(POD_NAME)") and
                      list(env).index("POD_NAME") < list(env).index("MOTA_MQTT_CLIENT_ID"),
                      f"{name}: MQTT client id {client_id!r} from the pod name (downward API)")
                check("valueFrom" in env.get("MOTA_DATABASE_URL", {}), f"{name}: database URL from a Secret")
                for secret_var in ("MOTA_DATABASE_URL", "MOTA_S3_SECRET_ACCESS_KEY", "MOTA_MQTT_PASSWORD"):
                    if secret_var in env:
                        check("secretKeyRef" in env[secret_var].get("valueFrom", {}),
                              f"{name}: {secret_var} comes from a secretKeyRef, not a literal")

    workloads = by_kind.get("StatefulSet", []) + by_kind.get("Deployment", [])
    check(len(workloads) == 1, f"one backend workload ({len(workloads)})")
    for wl in workloads:
        name = wl["metadata"]["name"]
        hpas = [h for h in by_kind.get("HorizontalPodAutoscaler", []) if h["spec"]["scaleTargetRef"]["name"] == name]
        if hpas:
            check("replicas" not in wl["spec"], f"{name}: no spec.replicas beside its autoscaler")
            check(hpas[0]["spec"]["scaleTargetRef"]["kind"] == wl["kind"], f"{name}: autoscaler targets its kind")
            replicas = hpas[0]["spec"]["minReplicas"]
        else:
            replicas = wl["spec"].get("replicas", 1)
        pod_labels = wl["spec"]["template"]["metadata"]["labels"]
        pdbs = [p for p in by_kind.get("PodDisruptionBudget", []) if matches(p["spec"]["selector"]["matchLabels"], pod_labels)]
        if replicas > 1:
            check(len(pdbs) == 1, f"{name}: {replicas} replicas have a PodDisruptionBudget")
            if pdbs:
                check(pdbs[0]["spec"].get("minAvailable", 0) < replicas,
                      f"{name}: PodDisruptionBudget minAvailable {pdbs[0]['spec'].get('minAvailable')} < {replicas} replicas (drains can proceed)")
        else:
            check(not pdbs, f"{name}: one replica, no PodDisruptionBudget to block drains")
        annotations = wl["spec"]["template"]["metadata"].get("annotations", {})
        configmaps = [(body, obj) for src, body, obj in docs if src.endswith("/configmap.yaml")]
        digests = {hashlib.sha256(body.encode()).hexdigest() for body, _ in configmaps}
        check(annotations.get("checksum/config") in digests, f"{name}: checksum/config is the ConfigMap's sha256")
        for svc in by_kind.get("Service", []):
            check(matches(svc["spec"]["selector"], pod_labels), f"Service {svc['metadata']['name']} selects {name}'s pods")
        for job in by_kind.get("Job", []):
            job_labels = job["spec"]["template"]["metadata"]["labels"]
            check(not any(matches(s["spec"]["selector"], job_labels) for s in by_kind.get("Service", [])) and
                  not any(matches(p["spec"]["selector"]["matchLabels"], job_labels) for p in pdbs),
                  f"Job {job['metadata']['name']}: its pod is in no Service and no disruption budget")
            hooks = job["metadata"].get("annotations", {})
            check(hooks.get("helm.sh/hook") == "pre-install,pre-upgrade" and "helm.sh/hook-delete-policy" in hooks,
                  f"Job {job['metadata']['name']}: pre-install/pre-upgrade hook with a delete policy")
            check(job["spec"]["template"]["spec"]["containers"][0].get("args") == ["migrate"],
                  f"Job {job['metadata']['name']}: runs `mota-backend migrate`")

    known = config_fields(config_rs)
    for cm in by_kind.get("ConfigMap", []):
        for key, text in cm.get("data", {}).items():
            if not key.endswith(".toml"):
                continue
            try:
                table = tomllib.loads(text)
            except tomllib.TOMLDecodeError as e:
                check(False, f"ConfigMap {key}: TOML parses ({e})")
                continue
            check(set(table) <= known, f"ConfigMap {key}: {len(table)} keys, all settings of config.rs "
                                       f"(unknown: {sorted(set(table) - known)})")
            check(all(isinstance(v, (str, int, bool)) for v in table.values()),
                  f"ConfigMap {key}: only strings, integers and booleans (the backend's loader takes no others)")
            check("mqtt_url" in table and "s3_bucket" in table and not table.get("no_mqtt"),
                  f"ConfigMap {key}: external broker and bucket set")
            check(not any(k in table for k in ("database_url", "s3_secret_access_key", "mqtt_password")),
                  f"ConfigMap {key}: holds no credentials")

    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    for sm in by_kind.get("ServiceMonitor", []):
        name = sm["metadata"]["name"]
        selected = [s for s in services.values() if matches(sm["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
        check(len(selected) == 1, f"ServiceMonitor {name}: selects exactly one Service ({len(selected)})")
        ports = {p.get("name") for s in selected for p in s["spec"]["ports"]}
        for ep in sm["spec"]["endpoints"]:
            check(ep["port"] in ports and ep["path"] == "/metrics",
                  f"ServiceMonitor {name}: scrapes /metrics on Service port {ep['port']!r}")
    for ing in by_kind.get("Ingress", []):
        name = ing["metadata"]["name"]
        for rule in ing["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                svc = services.get(backend["name"])
                check(svc is not None and backend["port"].get("name") in {p.get("name") for p in svc["spec"]["ports"]},
                      f"Ingress {name} {path['path']}: routes to Service {backend['name']} port {backend['port']}")
                check(not "/metrics".startswith(path["path"].rstrip("/") + "/") and path["path"] != "/metrics",
                      f"Ingress {name} {path['path']}: does not expose /metrics")
        if ing["spec"].get("tls"):
            hosts = {h for t in ing["spec"]["tls"] for h in t.get("hosts", [])}
            check(all(r["host"] in hosts for r in ing["spec"]["rules"]), f"Ingress {name}: TLS covers every host")

    print(f"  policy: {passes} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
