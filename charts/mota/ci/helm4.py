#!/usr/bin/env python3
"""The chart under Helm 4 (the Helm library of PyPI's helm-python-sdk), beside Helm 3.

    helm4.py render CHART VALUES HELM3_RENDERED NOTES_OUT KUBE_VERSION
        `helm lint --strict` finds nothing above INFO; the templates render the same
        manifests as Helm 3 did (compared as parsed objects, order aside); NOTES.txt is
        written to NOTES_OUT.
    helm4.py refuse CHART VALUES PATTERN KEY=VALUE...
        with the overrides (`--set` syntax: dotted keys, YAML scalars, `null` deletes),
        schema validation or rendering fails, with PATTERN (a regex) in the error.
"""

import re
import sys

import yaml
from helm_python import HelmError, helm_sdk_version, values_from_yaml
from helm_python import chart as hc

RELEASE, NAMESPACE = "mota", "mota"


def load_values(path, overrides=()):
    values = values_from_yaml(open(path).read())
    for override in overrides:
        key, _, raw = override.partition("=")
        *parents, leaf = key.split(".")
        node = values
        for part in parents:
            node = node.setdefault(part, {})
        if raw == "null":
            node[leaf] = None  # as with `--set`: a null removes the chart's default
        else:
            node[leaf] = "" if raw == "" else yaml.safe_load(raw)
    return values


def objects(text):
    return [doc for doc in yaml.safe_load_all(text) if doc]


def canonical(objs):
    return sorted(yaml.safe_dump(without_random(o), sort_keys=True) for o in objs)


def without_random(obj):
    """The object with the values the chart generates at random (a new one per render
    without a cluster to look the old one up in) replaced by a placeholder."""
    if obj.get("kind") == "Secret" and obj["metadata"]["name"].endswith("-share-group"):
        obj = {**obj, "data": {k: "(random)" for k in obj.get("data", {})}}
    return obj


def render(chart, values_path, helm3_rendered, notes_out, kube_version):
    values = load_values(values_path)
    report = hc.lint(chart, values, strict=True, namespace=NAMESPACE, kube_version=f"v{kube_version}")
    problems = [m for m in report["messages"] if m["severity"] > 1] + [{"error": e} for e in report["errors"]]
    for m in problems:
        print(f"helm 4 lint: {m.get('path', '')} {m['error']}")
    manifests = hc.Chart.load(chart).render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    notes = manifests.pop(next(k for k in manifests if k.endswith("NOTES.txt")), "")
    helm4 = [o for text in manifests.values() for o in objects(text)]
    helm3 = objects(open(helm3_rendered).read())
    same = canonical(helm4) == canonical(helm3)
    if not same:
        only4 = set(canonical(helm4)) - set(canonical(helm3))
        only3 = set(canonical(helm3)) - set(canonical(helm4))
        print(f"helm 4 renders differently: {len(only4)} object(s) only in Helm 4, {len(only3)} only in Helm 3")
        for text in sorted(only4)[:2]:
            print("--- only in Helm 4:\n" + text)
    open(notes_out, "w").write(notes)
    print(f"helm {helm_sdk_version()}: lint {len(problems)} problem(s); {len(helm4)} objects, "
          f"{'the same as' if same else 'NOT the same as'} Helm 3's {len(helm3)}")
    return 0 if same and not problems else 1


def refuse(chart, values_path, pattern, overrides):
    values = load_values(values_path, overrides)
    c = hc.Chart.load(chart)
    try:
        c.validate_schema(values)
        c.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    except HelmError as e:
        message = str(e)
        matching = [line for line in message.splitlines() if re.search(pattern, line)]
        if matching:
            print(f"helm 4 refused: {matching[0].strip()[:200]}")
            return 0
        print(f"helm 4 refused, but not with /{pattern}/: {message}")
        return 1
    print("helm 4 accepted it")
    return 1


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["render"] and len(args) == 6:
        sys.exit(render(*args[1:]))
    if args[:1] == ["refuse"] and len(args) >= 4:
        sys.exit(refuse(args[1], args[2], args[3], args[4:]))
    sys.exit(__doc__)
