"""The operator's parts that talk to the outside: its API client, checkpoint ConfigMaps, the Git checkout
and its credentials, and the metrics endpoint."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import kmock
import pytest

from controller.operator import metrics
from controller.operator.checkpoints import (
    FILES_ANNOTATION,
    CheckpointStore,
    CheckpointTooLarge,
    ModelRef,
    encode,
    recorded_digest,
)
from controller.operator.kube import ApiAccess, ApiError, KubeClient, NotFound, merge_diff
from controller.operator.settings import essence_storage, kopf_settings
from controller.shells.gitsource import GitCredentials, GitSource, GitSourceError, redact
from tests.support.kube import Client, KubeApi


@pytest.fixture
async def api_client(kube: KubeApi) -> Any:
    client = KubeClient(ApiAccess(server=str(kube.url)), backoffs=(0.01, 0.01, 0.01))
    yield client
    await client.close()


@pytest.fixture
async def model_ref(kube: KubeApi, client: Client) -> ModelRef:
    kube.register_crds()
    await client.namespace("team-quantum")
    from tests.crds.objects import model

    created = await client.create(model())
    return ModelRef(namespace="team-quantum", name="iris-vqc", uid=created["metadata"]["uid"])


# --- the API client --------------------------------------------------------------------------------


async def test_client_retries_transient_failures_and_names_permanent_ones(
    kube: KubeApi, api_client: KubeClient
) -> None:
    await Client(kube).namespace("ns1")
    kube.fail(kmock.action.FETCH, "namespaces", status=503, times=2)
    assert (await api_client.get("/api/v1/namespaces/ns1"))["metadata"]["name"] == "ns1"
    kube.fail(kmock.action.FETCH, "namespaces", status=503, times=5)
    with pytest.raises(ApiError) as err:
        await api_client.get("/api/v1/namespaces/ns1")
    assert err.value.status == 503
    with pytest.raises(NotFound):
        await api_client.get("/api/v1/namespaces/nowhere")


def test_merge_diff_turns_old_into_new() -> None:
    old = {"phase": "Training", "training": {"iteration": 3, "loss": 0.5}, "message": "x"}
    new = {"phase": "Ready", "training": {"iteration": 3}, "champion": {"version": 1}}
    patch = merge_diff(old, new)
    assert patch == {"message": None, "phase": "Ready", "training": {"loss": None}, "champion": {"version": 1}}


def test_no_handler_compares_essences_and_none_is_built_per_event() -> None:
    import kopf

    from controller.operator.handlers import build_registry

    body = kopf.Body(
        {
            "apiVersion": "qmlops.io/v1alpha1",
            "kind": "QuantumModel",
            "metadata": {
                "name": "m",
                "uid": "u",
                "labels": {"team": "a"},
                "annotations": {"qmlops.io/last-handled-configuration": "{}", "other": "kept"},
            },
            "spec": {"owner": "alice@example.com", "promotion": {"gates": [{"metric": "accuracy"}]}},
            "status": {"phase": "Ready", "conditions": [{"type": "Ready", "status": "True"}]},
        }
    )

    async def noop(**_: Any) -> None:
        return None

    for executor in ("in-process", "jobs"):
        config = SimpleNamespace(webhook=None, namespaces=(), executor=executor)
        runtime = SimpleNamespace(config=config, client=None, metrics=None, startup=noop, policy_event=noop)
        registry = build_registry(runtime, login=lambda **_: None)  # type: ignore[arg-type]
        assert not registry._changing.get_all_handlers(), "a changing handler needs kopf's essence back"
    ours, kopfs = essence_storage("qmlops.io"), kopf.AnnotationsDiffBaseStorage(prefix="qmlops.io")
    assert ours.build(body=body) == {}, "nothing compares it: nothing is copied"
    assert ours.build(body=body, extra_fields=["status.phase"]) == kopfs.build(body=body, extra_fields=["status.phase"])


# --- checkpoints -----------------------------------------------------------------------------------


def recorded(kube: KubeApi, model: ModelRef) -> str | None:
    """The checkpoint digest the operator recorded on the model, as a new pod reads it."""
    return recorded_digest(kube.read("QuantumModel", model.namespace, model.name) or {})


def checkpoint_folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    return root


async def test_checkpoint_survives_in_a_configmap_owned_by_the_model(
    kube: KubeApi, api_client: KubeClient, model_ref: ModelRef, tmp_path: Path
) -> None:
    files = {"state.json": b'{"iteration": 3}', "params/theta.npy": b"\x00\x01\x02"}
    folder = checkpoint_folder(tmp_path / "pod-a", files)
    store = CheckpointStore(api_client)
    assert await store.save(model_ref, folder) is True
    assert await store.save(model_ref, folder) is False, "unchanged files are not written again"
    configmap = kube.read("ConfigMap", "team-quantum", model_ref.configmap) or {}
    assert configmap["metadata"]["ownerReferences"][0]["uid"] == model_ref.uid
    assert base64.b64decode(configmap["binaryData"]["state.json"]) == files["state.json"]

    (folder / "state.json").write_bytes(b'{"iteration": 4}')
    (folder / "params/theta.npy").unlink()
    await store.save(model_ref, folder)

    fresh = tmp_path / "pod-b"  # a new pod: nothing on its disk
    assert await CheckpointStore(api_client).restore(model_ref, fresh, recorded(kube, model_ref)) == 1
    assert (fresh / "state.json").read_bytes() == b'{"iteration": 4}'
    assert not (fresh / "params").exists()


async def test_a_checkpoint_of_another_model_or_damaged_is_not_restored(
    kube: KubeApi, api_client: KubeClient, model_ref: ModelRef, tmp_path: Path
) -> None:
    store = CheckpointStore(api_client)
    await store.save(model_ref, checkpoint_folder(tmp_path / "a", {"state.json": b"1"}))
    impostor = ModelRef(namespace=model_ref.namespace, name=model_ref.name, uid="another-uid")
    assert await CheckpointStore(api_client).restore(impostor, tmp_path / "b", recorded(kube, model_ref)) == 0
    await Client(kube).patch("ConfigMap", "team-quantum", model_ref.configmap, {"binaryData": {"state.json": "Mg=="}})
    assert await CheckpointStore(api_client).restore(model_ref, tmp_path / "c", recorded(kube, model_ref)) == 0


async def test_a_checkpoint_rewritten_with_its_own_index_is_ignored_with_a_warning(
    kube: KubeApi, api_client: KubeClient, model_ref: ModelRef, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Whoever can write the ConfigMap can recompute the digests kept beside the data: the digest the
    operator recorded on the model is what a restore is checked against."""
    await CheckpointStore(api_client).save(model_ref, checkpoint_folder(tmp_path / "a", {"journal.jsonl": b"{}\n"}))
    data, index = encode({"journal.jsonl": b'{"values": [0.0]}\n'})
    tampered = {"metadata": {"annotations": {FILES_ANNOTATION: json.dumps(index)}}, "binaryData": data}
    await Client(kube).patch("ConfigMap", "team-quantum", model_ref.configmap, tampered)
    fresh = tmp_path / "pod-b"
    assert await CheckpointStore(api_client).restore(model_ref, fresh, recorded(kube, model_ref)) == 0
    assert not fresh.exists()
    assert "does not match the digest the operator recorded" in caplog.text
    assert await CheckpointStore(api_client).restore(model_ref, fresh, None) == 0, "no record: not trusted"


async def test_an_empty_folder_discards_the_checkpoint_and_deleting_the_model_collects_it(
    kube: KubeApi, api_client: KubeClient, model_ref: ModelRef, tmp_path: Path
) -> None:
    store = CheckpointStore(api_client)
    folder = checkpoint_folder(tmp_path / "a", {"state.json": b"1"})
    await store.save(model_ref, folder)
    (folder / "state.json").unlink()
    await store.save(model_ref, folder)
    assert kube.read("ConfigMap", "team-quantum", model_ref.configmap) is None
    await store.save(model_ref, checkpoint_folder(folder, {"state.json": b"2"}))
    await Client(kube).delete("QuantumModel", "team-quantum", "iris-vqc")
    assert kube.read("ConfigMap", "team-quantum", model_ref.configmap) is None


async def test_checkpoints_listed_at_startup_spare_a_lookup_per_model(
    kube: KubeApi, api_client: KubeClient, model_ref: ModelRef, tmp_path: Path
) -> None:
    await CheckpointStore(api_client).save(model_ref, checkpoint_folder(tmp_path / "a", {"state.json": b"1"}))
    other = ModelRef(namespace=model_ref.namespace, name="wine-vqc", uid="u-2")
    store = CheckpointStore(api_client)
    assert await store.index(("team-quantum",)) == 1
    calls = api_client.calls
    assert await store.restore(other, tmp_path / "b", None) == 0 and not await store.discard(other)
    assert api_client.calls == calls, "a model with no checkpoint listed costs no request"
    assert await store.restore(model_ref, tmp_path / "c", recorded(kube, model_ref)) == 1


def test_a_checkpoint_too_large_for_a_configmap_is_refused() -> None:
    with pytest.raises(CheckpointTooLarge):
        encode({"big": b"x" * (800 * 1024)})


# --- the Git checkout ------------------------------------------------------------------------------


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    bare = tmp_path / "remote.git"
    git("init", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    seed = tmp_path / "seed"
    git("init", "-b", "main", str(seed), cwd=tmp_path)
    (seed / "README.md").write_text("models\n")
    git("add", ".", cwd=seed)
    git("-c", "user.name=a", "-c", "user.email=a@example.com", "commit", "-m", "start", cwd=seed)
    git("push", str(bare), "main", cwd=seed)
    return bare


def test_the_repository_is_cloned_then_fetched(remote: Path, tmp_path: Path) -> None:
    source = GitSource(str(remote), tmp_path / "work" / "repo", branch="main")
    checkout = source.prepare()
    assert (checkout / "README.md").read_text() == "models\n"
    assert source.prepare() == checkout


def test_a_clone_of_another_repository_is_never_reused(remote: Path, tmp_path: Path) -> None:
    """A folder holding a clone whose origin is not --repo: set aside untouched, the repository cloned
    afresh, so nothing is ever pushed to the other one."""
    other = tmp_path / "other.git"
    git("clone", "--bare", str(remote), str(other), cwd=tmp_path)
    folder = tmp_path / "work" / "repo"
    GitSource(str(other), folder).prepare()
    (folder / "unpushed.txt").write_text("a decision for the other repository\n")

    checkout = GitSource(str(remote), folder).prepare()
    assert git("remote", "get-url", "origin", cwd=checkout).strip() == str(remote)
    assert not (checkout / "unpushed.txt").exists()
    (aside,) = [p for p in folder.parent.iterdir() if p.name.startswith("repo.other-")]
    assert (aside / "unpushed.txt").exists(), "the other clone is kept as it was"
    assert git("remote", "get-url", "origin", cwd=aside).strip() == str(other)


def test_the_work_folder_is_the_users_own_and_keyed_by_repository_and_branch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controller.operator.settings import OperatorConfig
    from controller.shells.workdir import WorkdirError, default_workdir, private_folder

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_workdir() == tmp_path / "cache" / "qmlops" / "operator"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    assert default_workdir() == tmp_path / "home" / ".cache" / "qmlops" / "operator"

    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    assert stat.S_IMODE(private_folder(shared).stat().st_mode) == 0o700
    if os.getuid() == 0:
        os.chown(shared, 12345, 12345)
        with pytest.raises(WorkdirError, match="another user"):
            private_folder(shared)

    token = "ghp_" + "T0k3n" * 8
    base = OperatorConfig(repo=f"https://x-access-token:{token}@example.com/models.git", workdir=tmp_path)
    keys = {
        base.clones,
        OperatorConfig(repo=base.repo, workdir=tmp_path, branch="dev").clones,
        OperatorConfig(repo="https://example.com/other.git", workdir=tmp_path).clones,
    }
    assert len(keys) == 3 and all(key.parent == tmp_path for key in keys)
    assert not any(token in str(key) or "example.com" in str(key) for key in keys)


def test_token_credentials_reach_git_through_files_only(remote: Path, tmp_path: Path) -> None:
    token = "ghp_" + "x1" * 20
    secret = {"metadata": {"name": "git"}, "data": {"token": base64.b64encode(token.encode()).decode()}}
    source = GitSource(str(remote), tmp_path / "work" / "repo", credentials=GitCredentials.from_secret(secret))
    checkout = source.prepare()
    config = (checkout / ".git" / "config").read_text()
    assert token not in config
    asked = subprocess.run(
        ["git", "credential", "fill"],
        cwd=checkout,
        input="protocol=https\nhost=example.com\n\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"password={token}" in asked and "username=x-access-token" in asked
    token_file = tmp_path / "work" / ".git-credentials" / "token"
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600


def test_ssh_keys_are_used_with_known_hosts(remote: Path, tmp_path: Path) -> None:
    secret = {
        "metadata": {"name": "git"},
        "data": {
            "ssh-privatekey": base64.b64encode(
                b"-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----"
            ).decode(),
            "known_hosts": base64.b64encode(b"github.com ssh-ed25519 AAAA").decode(),
        },
    }
    source = GitSource(str(remote), tmp_path / "work" / "repo", credentials=GitCredentials.from_secret(secret))
    checkout = source.prepare()
    command = git("config", "core.sshCommand", cwd=checkout)
    assert "IdentitiesOnly=yes" in command and "StrictHostKeyChecking=yes" in command
    assert "BEGIN OPENSSH" not in command


def test_the_work_tree_answers_as_the_engines_registry_with_fewer_git_processes(remote: Path, tmp_path: Path) -> None:
    from controller.engine.registry import GitIdentity, Registry
    from controller.operator.worktree import WorkTree

    checkout = GitSource(str(remote), tmp_path / "work" / "repo", branch="main").prepare()
    identity = GitIdentity("qmlops-operator", "qmlops-operator@qmlops.io")
    tree = WorkTree(checkout, identity=identity, remote="origin")
    for model, kind in [("a", "registered"), ("b", "registered"), ("a", "promoted")]:
        tree.record("ns", model, at="2026-01-01T00:00:00Z", kind=kind, version=1, message=kind)
        assert tree.git.head() == git("rev-parse", "HEAD", cwd=checkout).strip(), "HEAD read again after a commit"
    assert tree.publish().pushed and not tree.publish().pushed, "nothing new: nothing to publish"
    assert git("rev-parse", "main", cwd=remote).strip() == tree.git.head()
    plain = Registry(checkout, identity=identity, remote="origin")
    for model in ("a", "b", "c"):
        assert tree.entry_commits("ns", model) == plain.entry_commits("ns", model)
    (checkout / "registry" / "ns" / "a" / "half-written.json").write_text("{")
    fresh = WorkTree(checkout, identity=identity, remote="origin")
    assert fresh.discard_uncommitted("ns", "b") == ["registry/ns/a/half-written.json"], "checked once, for all"
    assert not (checkout / "registry" / "ns" / "a" / "half-written.json").exists()
    assert fresh.discard_uncommitted("ns", "a") == []


def test_a_warmed_work_tree_leaves_its_first_reconcile_no_git_process(remote: Path, tmp_path: Path) -> None:
    from controller.engine.registry import GitIdentity
    from controller.operator.worktree import WorkTree

    checkout = GitSource(str(remote), tmp_path / "work" / "repo", branch="main").prepare()
    identity = GitIdentity("qmlops-operator", "qmlops-operator@qmlops.io")
    left = WorkTree(checkout, identity=identity, remote="origin")
    left.record("ns", "a", at="2026-01-01T00:00:00Z", kind="registered", version=1, message="registered")
    (checkout / "registry" / "ns" / "a" / "half-written.json").write_text("{")  # an earlier pod died here

    tree = WorkTree(checkout, identity=identity, remote="origin")  # this pod's start
    tree.warm()
    assert git("rev-parse", "main", cwd=remote).strip() == tree.git.head(), "what was left unpushed is pushed"
    assert not (checkout / "registry" / "ns" / "a" / "half-written.json").exists()
    runs = []
    real_run = tree.git.run
    tree.git.run = lambda *args, **kwargs: runs.append(args) or real_run(*args, **kwargs)  # type: ignore[method-assign]
    tree.sync()
    assert not tree.publish().pushed and tree.discard_uncommitted("ns", "a") == []
    assert set(tree.entry_commits("ns", "a")) == {e.digest for e in tree.ledger("ns", "a").entries}
    assert runs == [], "fetched a moment ago, nothing to push, checked clean, entries mapped: no git process"


def test_failures_are_reported_without_credentials(tmp_path: Path) -> None:
    creds = GitCredentials(token="s3cr3t-token-value")
    source = GitSource("https://user:s3cr3t-token-value@127.0.0.1:9/nothing.git", tmp_path / "repo", credentials=creds)
    with pytest.raises(GitSourceError) as err:
        source.prepare()
    assert "s3cr3t" not in str(err.value) and "git clone failed" in str(err.value)
    assert redact("see https://bob:pw@host/x", None) == "see https://***@host/x"
    with pytest.raises(GitSourceError, match="holds no Git credentials"):
        GitCredentials.from_secret({"metadata": {"name": "empty"}, "data": {}})


# --- metrics ---------------------------------------------------------------------------------------


async def test_metrics_are_served_for_prometheus(unused_tcp_port: int) -> None:
    counters = metrics.Metrics()
    counters.reconciles.labels(kind="QuantumModel", result="ok").inc()
    counters.queue_depth.set(3)
    runner = await metrics.serve(counters, unused_tcp_port, host="127.0.0.1")
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{unused_tcp_port}/metrics") as rsp,
        ):
            text = await rsp.text()
    finally:
        await runner.cleanup()
    assert 'qmlops_reconciles_total{kind="QuantumModel",result="ok"} 1.0' in text
    assert "qmlops_queue_depth 3.0" in text


# --- connecting: KUBECONFIG and the in-cluster service account ------------------------------------------


async def test_kubeconfig_is_honoured(kube: KubeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from controller.operator.kube import load_access

    config = kube.write_kubeconfig(tmp_path / "kubeconfig", token="kubeconfig-token")
    monkeypatch.setenv("KUBECONFIG", str(config))
    access = load_access()
    assert access.server == str(kube.url).rstrip("/") and access.token() == "kubeconfig-token"
    client = KubeClient(access)
    try:
        await Client(kube).namespace("ns1")
        await client.get("/api/v1/namespaces/ns1")
    finally:
        await client.close()
    assert kube._requests[-1].headers["Authorization"] == "Bearer kubeconfig-token"
    info = access.connection_info()
    assert info.server == access.server and info.token == "kubeconfig-token"


def test_the_in_cluster_service_account_is_used_without_kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubernetes.config import incluster_config

    from controller.operator.kube import load_access

    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("service-account-token")
    ca.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(ca))
    access = load_access()
    assert access.server == "https://10.0.0.1:443" and access.ca_path == str(ca)
    assert access.token() == "service-account-token"


def test_the_command_line_refuses_what_cannot_work() -> None:
    import argparse

    from controller.cli import operator as operator_cli

    parser = argparse.ArgumentParser()
    operator_cli.register(parser.add_subparsers())
    for argv, message in [
        (["operator"], "--repo"),
        (["operator", "--repo", "x", "--webhook-cert", "c"], "go together"),
        (["operator", "--repo", "x", "--git-secret", "nons"], "NAMESPACE/NAME"),
        (["operator", "--repo", "x", "--training-workers", "0"], "at least 1"),
        (["operator", "--repo", "x", "--webhook-self-signed", "--webhook-insecure"], "self-signed"),
        (["operator", "--repo", "x", "--peering-lifetime", "120"], "goes with --peering"),
        (["operator", "--repo", "x", "--peering", "--peering-lifetime", "5"], "between 15 and 3600"),
    ]:
        args = parser.parse_args(argv)
        if argv == ["operator"]:
            args.repo = None
        with pytest.raises(operator_cli.UsageError, match=message):
            operator_cli.build_config(args)
    config = operator_cli.build_config(
        parser.parse_args(["operator", "--repo", "x", "-n", "a", "-n", "b", "--metrics-port", "0"])
    )
    assert config.namespaces == ("a", "b") and config.metrics_port is None
    assert kopf_settings(config).peering.lifetime == 60, "kopf's default lifetime unless asked"
    peered = operator_cli.build_config(
        parser.parse_args(["operator", "--repo", "x", "--peering", "--peering-lifetime", "300"])
    )
    assert kopf_settings(peered).peering.lifetime == 300 and kopf_settings(peered).peering.mandatory


def test_the_webhook_is_served_only_with_a_certificate(tmp_path: Path) -> None:
    """kopf would make its own certificate with a package that is not installed, and crash at start:
    with no certificate (given, or self-signed on request) the webhook is off."""
    import argparse

    from controller.cli import operator as operator_cli
    from controller.operator.process import with_certificate

    parser = argparse.ArgumentParser()
    operator_cli.register(parser.add_subparsers())

    def config(*argv: str) -> Any:
        return operator_cli.build_config(
            parser.parse_args(["operator", "--repo", "x", "--workdir", str(tmp_path), *argv])
        )

    assert config().webhook is None
    assert config("--webhook-cert", "c", "--webhook-key", "k").webhook.certfile == Path("c")
    assert config("--webhook-insecure").webhook.insecure
    assert config("--webhook-self-signed", "--webhook-port", "0").webhook is None
    signed = with_certificate(config("--webhook-self-signed", "--webhook-host", "operator.local"))
    hook = signed.webhook
    assert hook is not None and hook.certfile is not None and hook.keyfile is not None
    assert stat.S_IMODE(os.stat(hook.keyfile).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(hook.keyfile.parent).st_mode) == 0o700

    from cryptography import x509

    certificate = x509.load_pem_x509_certificate(hook.certfile.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "operator.local" in names.get_values_for_type(x509.DNSName)


def test_the_operators_modules_import_one_way() -> None:
    """No import cycle in controller/operator, function-level imports included: the process entry
    point imports the handlers, which import the workers and pipelines, which import the runtime."""
    import ast

    import controller.operator

    package = Path(controller.operator.__file__).parent
    graph: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "controller.operator":
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("controller.operator."):
                imported.add((node.module or "").rsplit(".", 1)[1])
            elif isinstance(node, ast.Import):
                imported |= {a.name.rsplit(".", 1)[1] for a in node.names if a.name.startswith("controller.operator.")}
        graph[path.stem] = imported - {path.stem}

    def reachable(start: str) -> set[str]:
        seen: set[str] = set()
        todo = list(graph.get(start, ()))
        while todo:
            module = todo.pop()
            if module not in seen:
                seen.add(module)
                todo.extend(graph.get(module, ()))
        return seen

    for module in graph:
        assert module not in reachable(module), f"{module} imports itself through {sorted(reachable(module))}"
    assert {"handlers", "workers", "pipelines", "process"}.isdisjoint(reachable("runtime"))
    assert "runtime" in reachable("process") and "handlers" in reachable("process")


def test_the_work_tree_brings_gits_commit_graph_up_to_date_at_most_every_interval(remote: Path, tmp_path: Path) -> None:
    from controller.engine.registry import GitIdentity
    from controller.operator.worktree import WorkTree

    checkout = GitSource(str(remote), tmp_path / "work" / "repo", branch="main").prepare()
    tree = WorkTree(checkout, identity=GitIdentity("qmlops-operator", "qmlops-operator@qmlops.io"), remote="origin")
    runs: list[tuple[str, ...]] = []
    real_run = tree.git.run
    tree.git.run = lambda *args, **kwargs: runs.append(args) or real_run(*args, **kwargs)  # type: ignore[method-assign]
    for message in ("one", "two", "three"):
        tree.record("ns", "a", at="2026-01-01T00:00:00Z", kind="blocked", version=None, message=message)
        tree.sync()
    assert sum(1 for args in runs if args[0] == "commit-graph") == 1, "written once, HEAD moved thrice"
    tree.index_interval = 0.0
    tree.record("ns", "a", at="2026-01-01T00:00:00Z", kind="blocked", version=None, message="four")
    tree.sync()
    assert sum(1 for args in runs if args[0] == "commit-graph") == 2
    assert git("rev-parse", "main", cwd=remote).strip() == tree.git.head(), "every decision pushed all the same"


def test_a_training_is_never_started_on_a_fetch_shared_with_other_models(
    remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica taking over from one that just stopped (kopf peering) fetched at its start, before the
    other registered the model's training: its first look at the model shares that fetch, and must
    neither train the model again (paying twice) nor say a training is due; it looks at the remote as
    it is now first."""
    from controller.engine.reconcile import TrainingDue
    from controller.operator.runtime import Runtime
    from controller.operator.settings import OperatorConfig
    from controller.operator.workers import ModelWorker, read
    from controller.operator.worktree import WorkTree
    from tests.operator.operator_env import tiny_model

    monkeypatch.setattr(WorkTree, "min_sync_interval", 3600.0)  # the takeover comes within the interval
    body = tiny_model()
    body["metadata"].update(uid="0b1c", generation=1)
    observed = read(body).observed
    assert observed is not None

    def worker(pod: str, trainer: Any = None) -> ModelWorker:
        config = OperatorConfig(repo=str(remote), workdir=tmp_path / pod, metrics_port=None, liveness=None)
        return ModelWorker(
            Runtime(config, ApiAccess(server="http://127.0.0.1:9"), trainer=trainer), "quantum", "iris-tiny", "0b1c"
        )

    trained: list[str] = []
    standbys = {
        licensed: worker(f"standby-{licensed}", trainer=lambda spec, **options: trained.append("standby"))
        for licensed in (False, True)  # one before its training daemon started, one after
    }
    for standby in standbys.values():
        standby.runtime.reconciler().registry.warm()  # its start: the remote holds no version yet
    registered = worker("active").runtime.reconciler().reconcile(observed)  # the replica that stopped
    assert [d.kind.value for d in registered.decisions] == ["registered", "gate-passed", "promoted"]

    for licensed, standby in standbys.items():
        try:
            outcome = standby._reconcile(observed, lambda: False, coalesce=True, may_train=licensed)
        except TrainingDue as due:
            raise AssertionError(f"a training said due on a stale fetch: {due}") from None
        assert outcome.decisions == [] and outcome.status.champion is not None
        assert outcome.status.champion.version == 1
    assert trained == [], "the standby trained nothing"


def test_the_process_keeps_one_pool_per_name_and_size_for_its_whole_life() -> None:
    """An operator started again in the same process reuses its threads (Qiskit's allocator has crashed
    the process on threads started after others ended), and the cells never take the reconciles' threads."""
    import threading

    from controller.operator.runtime import process_pool

    reconciles = process_pool("qmlops-reconcile", 2)
    assert process_pool("qmlops-reconcile", 2) is reconciles
    cells = process_pool("qmlops-cell", 2)
    assert cells is not reconciles and process_pool("qmlops-cell", 2) is cells
    assert cells.submit(lambda: threading.current_thread().name).result().startswith("qmlops-cell")
    assert process_pool("qmlops-cell", 3) is not cells
