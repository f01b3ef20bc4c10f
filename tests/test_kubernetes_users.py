"""manifests/install.yaml: every container says who it runs as, and that user can use every
volume it mounts and every file its arguments name.

No cluster runs here, so this is Kubernetes' permission model applied statically. The class of
bug it guards is the one docker-compose.yml had (a one-shot that could not write its volume): a
Secret's key file the container's user cannot read, or an output path it cannot write.
Kubelet's rules, as modelled:
* a container runs as securityContext runAsUser/runAsGroup (the container's, else the pod's),
  with the pod's fsGroup and supplementalGroups as extra groups;
* Secret, ConfigMap, projected and downwardAPI volumes are read-only; their files belong to root
  and, when the pod has an fsGroup, to that group, which kubelet also gives read permission;
  their mode is the item's, else defaultMode, else 0644;
* an emptyDir is world-writable (0777) and what a container writes into it (umask 022) is
  readable by the others.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from controlplane.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
INSTALL = [d for d in yaml.safe_load_all((ROOT / "manifests" / "install.yaml").read_text()) if d]
FILE_VOLUMES = ("secret", "configMap", "projected", "downwardAPI")
WORKLOADS = ("Deployment", "Job", "DaemonSet", "StatefulSet")


@dataclass(frozen=True)
class User:
    uid: int
    groups: frozenset[int]


def pods(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in WORKLOADS:
            yield f"{doc['kind']} {doc['metadata']['name']}", doc["spec"]["template"]["spec"]


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def security(pod: dict[str, Any], container: dict[str, Any], key: str) -> Any:
    return container.get("securityContext", {}).get(key, pod.get("securityContext", {}).get(key))


def user(pod: dict[str, Any], container: dict[str, Any]) -> User:
    """Who the container runs as; it must say so, or it would be whatever its image decides."""
    uid, gid = security(pod, container, "runAsUser"), security(pod, container, "runAsGroup")
    if not (isinstance(uid, int) and isinstance(gid, int)):
        raise ValueError(f"container {container['name']} has no runAsUser/runAsGroup")
    extra = pod.get("securityContext", {})
    groups = {gid, *extra.get("supplementalGroups", [])}
    if "fsGroup" in extra:
        groups.add(extra["fsGroup"])
    return User(uid, frozenset(groups))


def readable(pod: dict[str, Any], volume: dict[str, Any], who: User, key: str | None = None) -> bool:
    """Can ``who`` read the file ``key`` (None: every file) of ``volume``?"""
    if "emptyDir" in volume:
        return True
    [kind] = [k for k in FILE_VOLUMES if k in volume]
    source = volume[kind]
    items = source.get("items") or []
    modes = [i.get("mode", source.get("defaultMode", 0o644)) for i in items if key in (None, i.get("path"))]
    modes = modes or [source.get("defaultMode", 0o644)]
    fs_group = pod.get("securityContext", {}).get("fsGroup")
    group = fs_group if fs_group is not None else 0
    for mode in modes:
        if fs_group is not None:
            mode |= 0o040
        if not (who.uid == 0 or mode & 0o004 or (mode & 0o040 and group in who.groups)):
            return False
    return True


def mount_of(container: dict[str, Any], path: str) -> dict[str, Any]:
    """The innermost volumeMount that holds ``path``."""
    holders = [m for m in container.get("volumeMounts", []) if PurePosixPath(path).is_relative_to(m["mountPath"])]
    assert holders, f"{container['name']}: nothing is mounted at {path}"
    return max(holders, key=lambda m: len(m["mountPath"]))


def files_used(pod: dict[str, Any]) -> dict[str, tuple[list[str], list[str]]]:
    """Container name → (files it reads, files it writes), from the arguments."""
    used: dict[str, tuple[list[str], list[str]]] = {}
    rendered_for_envoy: list[str] = []
    for container in containers(pod):
        reads, writes = used.setdefault(container["name"], ([], []))
        args = container.get("args", [])
        if container["image"].startswith("mirrorplane"):
            parsed = build_parser().parse_args(args)
            if parsed.command == "serve":
                reads += [str(p) for p in (parsed.tls_cert, parsed.tls_key, parsed.client_ca) if p]
            elif parsed.command == "bootstrap":
                writes.append(str(parsed.output))
                rendered_for_envoy += [
                    str(parsed.output),
                    *(p for p in (parsed.xds_ca, parsed.xds_cert, parsed.xds_key) if p),
                ]
        elif container["image"].startswith("envoyproxy/envoy"):
            reads += rendered_for_envoy  # the bootstrap and the files it names
    return used


def problems(docs: list[dict[str, Any]]) -> list[str]:
    found = []
    for where, pod in pods(docs):
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        used = files_used(pod)
        for container in containers(pod):
            name = f"{where}: container {container['name']}"
            try:
                who = user(pod, container)
            except ValueError as e:
                found.append(f"{where}: {e}")
                continue
            if who.uid == 0 or not security(pod, container, "runAsNonRoot"):
                found.append(f"{name} may run as root")
            for mount in container.get("volumeMounts", []):
                volume = volumes[mount["name"]]
                if "emptyDir" not in volume and not mount.get("readOnly"):
                    found.append(f"{name}: {mount['mountPath']} ({mount['name']}) is read-only anyway: say readOnly")
                if not readable(pod, volume, who):
                    found.append(
                        f"{name}: uid {who.uid} (groups {sorted(who.groups)}) cannot read {mount['mountPath']}"
                    )
            reads, writes = used[container["name"]]
            for path in reads:
                mount = mount_of(container, path)
                relative = str(PurePosixPath(path).relative_to(mount["mountPath"]))
                if not readable(pod, volumes[mount["name"]], who, relative):
                    found.append(f"{name}: uid {who.uid} (groups {sorted(who.groups)}) cannot read {path}")
            for path in writes:
                mount = mount_of(container, path)
                if mount.get("readOnly") or "emptyDir" not in volumes[mount["name"]]:
                    found.append(f"{name}: cannot write {path} ({mount['name']} is read-only)")
    return found


def test_every_container_runs_as_a_declared_user_that_can_use_its_volumes_and_files() -> None:
    assert list(pods(INSTALL)), "no workloads in install.yaml"
    assert problems(INSTALL) == []


def _pod(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc["spec"]["template"]["spec"]


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        # The keys are 0440 root's: readable for the containers' users through fsGroup only.
        (lambda docs: _pod(docs, "Deployment", "envoy")["securityContext"].pop("fsGroup"), "cannot read"),
        (lambda docs: _pod(docs, "Deployment", "mirrorplane")["securityContext"].pop("fsGroup"), "cannot read"),
        (
            lambda docs: _pod(docs, "Deployment", "envoy")["containers"][0]["securityContext"].pop("runAsUser"),
            "no runAsUser",
        ),
        (
            lambda docs: _pod(docs, "Deployment", "envoy")["initContainers"][0]["volumeMounts"][0].update(
                readOnly=True
            ),
            "cannot write",
        ),
        (
            lambda docs: _pod(docs, "Job", "mirrorplane-certgen")["containers"][0]["securityContext"].update(
                runAsUser=0
            ),
            "may run as root",
        ),
    ],
    ids=["envoy-no-fsgroup", "controlplane-no-fsgroup", "envoy-no-user", "bootstrap-read-only", "certgen-root"],
)
def test_the_check_catches_a_user_that_cannot_use_its_volume(breakage, expected) -> None:
    docs = copy.deepcopy(INSTALL)
    breakage(docs)
    assert any(expected in p for p in problems(docs)), problems(docs)
