"""What the local shell observes in a spec repository: the committed QuantumModels and QuantumPipelines
and where each came from (the last commit that changed its file, as ``main@sha1:<sha>``, and that
commit's author)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from controller.api import QuantumModel, QuantumPipeline
from controller.api.quantummodel import SourceRef
from controller.engine.documents import Problem
from controller.engine.pipelines.triggers import changed_since
from controller.engine.policy_report import pipeline_backends
from controller.engine.reconcile import Observed
from controller.engine.reconcile.pipeline import ObservedPipeline
from controller.engine.registry.git import Git
from controller.engine.registry.store import REGISTRY_DIR
from controller.engine.validation import load_resources

_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]+@")


@dataclass
class Observation:
    """The models found under the specs folder, the problems that kept others out, and the files
    skipped because what is in the work tree is not what is committed."""

    models: list[tuple[Observed, str]] = field(default_factory=list)  # (observed, spec path in the repo)
    problems: list[Problem] = field(default_factory=list)
    uncommitted: list[str] = field(default_factory=list)
    pipelines: list[tuple[ObservedPipeline, str]] = field(default_factory=list)  # (observed, spec path)

    def model(self, namespace: str, name: str) -> Observed | None:
        return next(
            (o for o, _ in self.models if (o.model.metadata.namespace, o.model.metadata.name) == (namespace, name)),
            None,
        )


def repository_name(git: Git) -> str:
    """The remote's URL without credentials, or the work tree's folder name."""
    if git.remote is not None:
        done = git.run("remote", "get-url", git.remote, check=False)
        if done.returncode == 0 and done.stdout.strip():
            return _USERINFO.sub(r"\1", done.stdout.strip())
    return git.root.name


def spec_source(git: Git, relative: str, repository: str) -> SourceRef:
    commits = git.log(paths=[relative], extra=["-1"])
    if not commits:
        return SourceRef(repository=repository, path=relative)
    commit = commits[0]
    branch = git.branch() or "HEAD"
    return SourceRef(
        repository=repository,
        revision=f"{branch}@sha1:{commit.sha}",
        path=relative,
        author=f"{commit.author_name} <{commit.author_email}>",
    )


def observe(
    git: Git, specs: Path, *, committed_only: bool = True, requested: dict[str, str] | None = None
) -> Observation:
    """Every valid QuantumModel and QuantumPipeline under ``specs``. With ``committed_only``, files
    with uncommitted changes are left out (``run`` reconciles what is committed; ``plan`` previews the
    work tree). ``requested``: pipeline (``namespace/name``) -> the time a run of it was requested."""
    requested = requested or {}
    pipelines: list[tuple[QuantumPipeline, str]] = []
    root = git.root.resolve()
    found = Observation()
    if not specs.exists():
        return found
    resources, problems = load_resources([specs])
    found.problems = [p for p in problems if p.severity == "error"]
    dirty = set(git.dirty([_relative(specs.resolve(), root)])) if committed_only else set()
    repository = repository_name(git)
    for resource in resources:
        relative = _relative(Path(resource.file).resolve(), root)
        if relative in dirty:
            if relative not in found.uncommitted:
                found.uncommitted.append(relative)
            continue
        if isinstance(resource.resource, QuantumModel):
            source = spec_source(git, relative, repository)
            found.models.append((Observed(model=resource.resource, source=source), relative))
        elif isinstance(resource.resource, QuantumPipeline):
            pipelines.append((resource.resource, relative))
    found.models.sort(key=lambda pair: (pair[0].model.metadata.namespace, pair[0].model.metadata.name))
    revision = git.head() or ""
    for pipeline, relative in sorted(pipelines, key=lambda p: (p[0].metadata.namespace, p[0].metadata.name)):
        model = found.model(pipeline.metadata.namespace, pipeline.spec.model)
        seen = ObservedPipeline(
            pipeline, model, revision, requested.get(pipeline_key(pipeline)), changed_since(git, f"{REGISTRY_DIR}/")
        )
        found.pipelines.append((seen, relative))
    every = [p for p, _ in pipelines]
    found.models = [
        (
            replace(o, pipeline_backends=pipeline_backends(every, o.model.metadata.namespace, o.model.metadata.name)),
            path,
        )
        for o, path in found.models
    ]
    return found


def pipeline_key(pipeline: QuantumPipeline) -> str:
    return f"{pipeline.metadata.namespace}/{pipeline.metadata.name}"


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()
