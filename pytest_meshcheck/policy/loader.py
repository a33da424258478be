"""Load Istio VirtualServices and DestinationRules from YAML, validated as strictly as Istio's admission.

Every problem in every document of every file is collected and raised together as one
:class:`~pytest_meshcheck.errors.PolicyError`; nothing half-loaded is ever returned. Documents of other
kinds are skipped with a note in :attr:`PolicySet.skipped`.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pytest_meshcheck.errors import PolicyError, PolicyIssue
from pytest_meshcheck.policy.destination_rule import build_destination_rule
from pytest_meshcheck.policy.model import (
    DestinationRule,
    Policy,
    PolicySet,
    PolicyWarning,
    SourceRef,
    VirtualService,
)
from pytest_meshcheck.policy.reader import DocContext, Fields, describe, item
from pytest_meshcheck.policy.validation import is_k8s_name, is_k8s_namespace
from pytest_meshcheck.policy.virtual_service import build_virtual_service
from pytest_meshcheck.policy.yamlsource import RawDocument, plain_document, read_documents

__all__ = ["API_GROUP", "API_VERSIONS", "load_policies", "load_policy_text", "parse_policy_documents"]

API_GROUP = "networking.istio.io"
# v1beta1 and v1 are Go type aliases of v1alpha3 in istio/api, so all three share one schema.
API_VERSIONS = ("v1alpha3", "v1beta1", "v1")
POLICY_KINDS = ("VirtualService", "DestinationRule")
ISTIO_NETWORKING_KINDS = (
    *POLICY_KINDS,
    "Gateway",
    "ServiceEntry",
    "Sidecar",
    "WorkloadEntry",
    "WorkloadGroup",
    "EnvoyFilter",
    "ProxyConfig",
)
YAML_SUFFIXES = (".yaml", ".yml")

_SKIP_REASONS = {
    "EnvoyFilter": "not applied by pytest-meshcheck; beware that EnvoyFilters can patch retries, timeouts and "
    "circuit breakers, which the local mesh then does not reproduce",
    "Sidecar": "not applied by pytest-meshcheck; the local mesh lets every service reach every other",
}


def load_policies(*paths: str | Path) -> PolicySet:
    """Load every VirtualService and DestinationRule from files and directories.

    Directories are searched recursively for ``*.yaml`` and ``*.yml`` files, in sorted order; files may
    hold several YAML documents. Other kinds and API groups are skipped with a note.

    Raises:
        PolicyError: Listing every problem found, each with file, document, field path, line and fix.
    """
    acc = _Accumulator()
    for file in _collect_files(paths, acc):
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            acc.file_issue(str(file), f"is not UTF-8 text ({exc.reason} at byte {exc.start})", "save the file as UTF-8")
            continue
        except OSError as exc:
            acc.file_issue(str(file), f"cannot be read: {exc.strerror or exc}", "check the path and its permissions")
            continue
        acc.add_text(text, str(file))
    return acc.result()


def load_policy_text(text: str, *, source: str = "<string>") -> PolicySet:
    """Load policies from YAML text (one or more documents); ``source`` names it in messages.

    Raises:
        PolicyError: Listing every problem found.
    """
    acc = _Accumulator()
    acc.add_text(text, source)
    return acc.result()


def parse_policy_documents(docs: Iterable[Any], source: str = "<data>") -> PolicySet:
    """Load policies from already-parsed documents (such as objects read from a cluster's API).

    ``None`` documents are ignored, as empty YAML documents are. Line numbers are not known.

    Raises:
        PolicyError: Listing every problem found.
    """
    acc = _Accumulator()
    for index, data in enumerate(docs):
        acc.add_document(plain_document(data, index), source)
    return acc.result()


def yaml_files(path: Path) -> list[Path] | None:
    """The YAML files a path names: itself, or every ``*.yaml``/``*.yml`` below a directory (sorted).

    ``None`` when the path does not exist.
    """
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix in YAML_SUFFIXES and p.is_file())
    return [path] if path.exists() else None


def unique_files(files: Iterable[Path]) -> list[Path]:
    """``files`` in order, each real file once (a file named twice, or through two paths, is read once)."""
    out: list[Path] = []
    seen: set[Path] = set()
    for file in files:
        key = file.resolve()
        if key not in seen:
            seen.add(key)
            out.append(file)
    return out


def _collect_files(paths: Iterable[str | Path], acc: _Accumulator) -> list[Path]:
    out: list[Path] = []
    for given in paths:
        path = Path(given)
        found = yaml_files(path)
        if found is None:
            acc.file_issue(str(path), "does not exist", "check the path")
        elif not found and path.is_dir():
            acc.file_issue(
                str(path),
                "is a directory without any *.yaml or *.yml file",
                "point at the directory or files that hold the policies",
            )
        out += found or []
    return unique_files(out)


class _Accumulator:
    """Collects policies, warnings, notes and issues across all documents of one load."""

    def __init__(self) -> None:
        self.issues: list[PolicyIssue] = []
        self.warnings: list[PolicyWarning] = []
        self.skipped: list[str] = []
        self.policies: list[Policy] = []

    def file_issue(self, file: str, message: str, fix: str) -> None:
        self.issues.append(PolicyIssue(file, 0, "(file)", message, fix))

    def add_text(self, text: str, source: str) -> None:
        for doc in read_documents(text):
            if isinstance(doc, RawDocument):
                self.add_document(doc, source)
            else:
                index, line, message = doc
                self.issues.append(
                    PolicyIssue(
                        source,
                        index,
                        "(document)",
                        message,
                        "fix the YAML syntax (check indentation and quoting)",
                        line,
                    )
                )

    def add_document(self, raw: RawDocument, source: str) -> None:
        ctx = DocContext(source, raw.index, raw.field_lines)
        for path, message, fix, line in raw.problems:
            ctx.error(path, message, fix, line)
        if raw.data is not None:
            policy = self._build(ctx, raw.data, source)
            if policy is not None:
                lines = {path: line for path, line in raw.field_lines.items() if path}
                ref = SourceRef(source, raw.index, raw.line, lines, raw.text)
                self.policies.append(dataclasses.replace(policy, source=ref))
        self.issues.extend(ctx.issues)
        self.warnings.extend(ctx.warnings)

    def _build(self, ctx: DocContext, data: Any, source: str) -> Policy | None:
        if not isinstance(data, Mapping):
            ctx.error(
                "",
                f"a Kubernetes resource must be a mapping with apiVersion, kind, metadata and spec; got "
                f"{describe(data)}",
                "write the resource as a YAML mapping",
            )
            return None
        doc = Fields(ctx, "", data, "Document")
        api_version, kind = doc.string("apiVersion"), doc.string("kind")
        if not api_version or not kind:
            for name, example in (("apiVersion", "networking.istio.io/v1"), ("kind", "VirtualService")):
                if not data.get(name):
                    ctx.error(name, f"{name} is missing or empty", f"add {name}: {example}")
            return None
        group, _, version = api_version.rpartition("/")
        if kind == "List":
            self._check_list(ctx, data)
        if api_version == API_GROUP or (group == API_GROUP and kind not in ISTIO_NETWORKING_KINDS):
            # Kubernetes rejects both ("no matches for kind"), so skipping them would hide a typo.
            what = "has no version" if api_version == API_GROUP else f"has no kind {kind!r}"
            close = difflib.get_close_matches(kind, ISTIO_NETWORKING_KINDS, n=1)
            hint = f"did you mean kind: {close[0]}? " if close and api_version != API_GROUP else ""
            ctx.error(
                "apiVersion" if api_version == API_GROUP else "kind",
                f"{API_GROUP} {what}",
                f"{hint}use apiVersion: {API_GROUP}/v1 with kind VirtualService or DestinationRule",
            )
            return None
        if group != API_GROUP or kind not in POLICY_KINDS:
            if kind in POLICY_KINDS:
                reason = f"not in API group {API_GROUP}"
            else:
                reason = _SKIP_REASONS.get(kind, "not a resilience policy")
            self.skipped.append(f"{source} (document {ctx.document}): skipped {kind} {api_version}: {reason}")
            return None
        if version not in API_VERSIONS:
            ctx.error(
                "apiVersion",
                f"{api_version} is not a version Istio serves for {kind}",
                f"use {API_GROUP}/v1 (or v1beta1, v1alpha3)",
            )
            return None
        meta_f = doc.obj("metadata", "ObjectMeta")
        spec_f = doc.obj("spec", kind)
        doc.finish()
        name, namespace = _metadata(doc, meta_f)
        if spec_f is None:
            doc.require("spec", f"add the {kind}'s spec")
            return None
        if kind == "VirtualService":
            return build_virtual_service(spec_f, name, namespace, api_version)
        return build_destination_rule(spec_f, name, namespace, api_version)

    def _check_list(self, ctx: DocContext, data: Mapping[str, Any]) -> None:
        items = data.get("items")
        for i, entry in enumerate(items if isinstance(items, list) else []):
            if isinstance(entry, Mapping) and entry.get("kind") in POLICY_KINDS:
                ctx.error(
                    item("items", i),
                    f"a {entry.get('kind')} inside a List is not loaded",
                    "put each resource in its own YAML document, separated by ---",
                )

    def result(self) -> PolicySet:
        self._check_duplicates()
        if self.issues:
            raise PolicyError(self.issues)
        return PolicySet(
            virtual_services=tuple(p for p in self.policies if isinstance(p, VirtualService)),
            destination_rules=tuple(p for p in self.policies if isinstance(p, DestinationRule)),
            warnings=tuple(self.warnings),
            skipped=tuple(self.skipped),
        )

    def _check_duplicates(self) -> None:
        first: dict[tuple[str, str | None, str], Policy] = {}
        hosts: dict[tuple[str, str | None, str], Policy] = {}
        for policy in self.policies:
            src = policy.source
            key = (policy.kind, policy.namespace, policy.name)
            if key in first:
                other = first[key].source
                self.issues.append(
                    PolicyIssue(
                        src.file,
                        src.document,
                        "metadata.name",
                        f"duplicate {policy.kind} {policy.namespace or '(no namespace)'}/{policy.name}; also in "
                        f"{other.file} (document {other.document}), and kubectl apply keeps only the last one",
                        "rename one of them or remove the duplicate",
                        src.field_lines.get("metadata.name"),
                    )
                )
            first.setdefault(key, policy)
            targets = policy.hosts if isinstance(policy, VirtualService) else (policy.host,)
            for host in targets:
                hkey = (policy.kind, policy.namespace, host)
                if hkey in hosts and hosts[hkey] is not policy:
                    other = hosts[hkey].source
                    self.warnings.append(
                        PolicyWarning(
                            src.file,
                            src.document,
                            "spec.hosts" if isinstance(policy, VirtualService) else "spec.host",
                            f"another {policy.kind} for host {host} is in {other.file} (document {other.document}); "
                            "for sidecars Istio does not merge them the way you may expect (for VirtualServices only "
                            "the oldest applies; for DestinationRules only the first subsets and policy win)",
                        )
                    )
                hosts.setdefault(hkey, policy)


def _metadata(doc: Fields, meta_f: Fields | None) -> tuple[str, str | None]:
    if meta_f is None:
        doc.require("metadata", "add metadata: {name: <name>, namespace: <namespace>}")
        return "", None
    name = meta_f.string("name")
    namespace = meta_f.string("namespace")
    meta_f.string_map("labels")
    meta_f.string_map("annotations")
    meta_f.finish()
    if name is None:
        extra = (
            " (generateName is not enough: pytest-meshcheck needs a fixed name)"
            if meta_f.present("generateName")
            else ""
        )
        meta_f.ctx.error(meta_f.at("name"), f"metadata.name is required{extra}", "add name: <resource-name>")
    elif not is_k8s_name(name):
        meta_f.ctx.error(
            meta_f.at("name"),
            f"{name!r} is not a valid Kubernetes name (RFC 1123 subdomain)",
            "use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit",
        )
    if namespace is not None and not is_k8s_namespace(namespace):
        meta_f.ctx.error(
            meta_f.at("namespace"),
            f"{namespace!r} is not a valid namespace (RFC 1123 label)",
            "use lower-case letters, digits and '-', at most 63 characters",
        )
    return name or "", namespace
