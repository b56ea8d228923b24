"""The Git layer on real repositories: commits with trailers as the controller, pushes that rebase
and retry on rejection, never force, and decisions about the same model that race."""

from __future__ import annotations

from controller.engine.registry import GitIdentity, Registry
from tests.registry.repos import Repos, git

AT = "2025-01-01T00:00:00Z"


def test_a_decision_is_one_commit_with_trailers_by_the_controller(repos: Repos) -> None:
    work = repos.clone("work")
    identity = GitIdentity.parse("Model Controller <controller@example.org>")
    registry = Registry(work, identity=identity)
    recorded = registry.record("demo", "m", at=AT, kind="blocked", version=None, message="blocked by rule x")
    registry.publish()
    log = repos.remote_log("-1", "--format=%an <%ae>|%cn <%ce>|%s%n%(trailers:only)")
    header, trailers = log.split("\n", 1)
    assert (
        header
        == "Model Controller <controller@example.org>|Model Controller <controller@example.org>|qmlops: demo/m: blocked by rule x"
    )
    assert "Qmlops-Model: demo/m" in trailers
    assert "Qmlops-Decision: blocked" in trailers
    assert f"Qmlops-Entry: {recorded.entry.digest}" in trailers
    assert git(repos.remote, "rev-parse", "main") == recorded.commit
    assert registry.entry_commits("demo", "m")[recorded.entry.digest].sha == recorded.commit


def test_a_rejected_push_is_rebased_and_retried_keeping_both_histories(repos: Repos) -> None:
    a, b = Registry(repos.clone("a")), Registry(repos.clone("b"))
    a.record("demo", "one", at=AT, kind="blocked", version=None, message="one")
    a.publish()
    human = repos.clone("human")
    repos.commit_file(human, "specs/x.yaml", "x: 1\n", "a spec change")
    repos.push(human)
    b.record("demo", "two", at=AT, kind="blocked", version=None, message="two")
    result = b.publish()
    assert result.pushed and result.attempts == 2 and not result.dropped
    subjects = repos.remote_log("--format=%s").splitlines()
    assert subjects[:3] == ["qmlops: demo/two: two", "a spec change", "qmlops: demo/one: one"]


def test_racing_decisions_on_one_model_drop_the_later_commit_never_force(repos: Repos) -> None:
    a, b = Registry(repos.clone("a")), Registry(repos.clone("b"))
    first = a.record("demo", "m", at=AT, kind="blocked", version=None, message="from a")
    a.publish()
    b.record("demo", "m", at=AT, kind="blocked", version=None, message="from b")
    b.record("demo", "other", at=AT, kind="blocked", version=None, message="other from b")
    result = b.publish()
    assert [c.subject for c in result.dropped] == ["qmlops: demo/m: from b"]
    assert result.pushed
    assert [e.message for e in b.ledger("demo", "m").entries] == ["from a"]
    assert b.ledger("demo", "m").entries[0].digest == first.entry.digest
    assert [e.message for e in b.ledger("demo", "other").entries] == ["other from b"]
    # the remote's history only grew: a's commit is still an ancestor of main
    git(repos.remote, "merge-base", "--is-ancestor", first.commit, "main")


def test_an_unchanged_registry_publishes_nothing(repos: Repos) -> None:
    registry = Registry(repos.clone("work"))
    before = git(repos.remote, "rev-parse", "main")
    assert registry.sync() == []
    assert not registry.publish().pushed
    assert git(repos.remote, "rev-parse", "main") == before


def test_without_a_remote_decisions_stay_local(tmp_path) -> None:  # type: ignore[no-untyped-def]
    repo = tmp_path / "local"
    repo.mkdir()
    git(repo, "init", "--quiet")
    registry = Registry(repo)
    registry.record("demo", "m", at=AT, kind="blocked", version=None, message="x")
    assert registry.sync() == []
    assert not registry.publish().pushed
    assert len(registry.ledger("demo", "m").entries) == 1


def test_a_clone_of_an_empty_remote_receives_its_first_commits(tmp_path) -> None:  # type: ignore[no-untyped-def]
    remote = tmp_path / "empty.git"
    git(tmp_path, "init", "--quiet", "--bare", str(remote))
    git(tmp_path, "clone", "--quiet", str(remote), str(tmp_path / "runner"))
    git(tmp_path, "clone", "--quiet", str(remote), str(tmp_path / "human"))
    registry = Registry(tmp_path / "runner")
    assert registry.sync() == []  # nothing there yet
    human = tmp_path / "human"
    (human / "spec.yaml").write_text("a: 1\n")
    git(human, "add", "spec.yaml")
    git(human, "commit", "--quiet", "-m", "first")
    git(human, "push", "--quiet", "origin", "HEAD:main")
    assert registry.sync() == []
    assert (tmp_path / "runner" / "spec.yaml").read_text() == "a: 1\n"


def test_a_decision_kind_given_as_the_enum_is_written_as_its_word(repos: Repos) -> None:
    from controller.engine.decisions import LedgerKind

    work = repos.clone("work")
    registry = Registry(work)
    recorded = registry.record("demo", "m", at=AT, kind=LedgerKind.BLOCKED, version=None, message="blocked by rule x")
    assert type(recorded.entry.kind) is str and recorded.entry.kind == "blocked"
    assert '"kind":"blocked"' in (work / "registry/demo/m/ledger.jsonl").read_text()
    assert git(work, "log", "-1", "--format=%(trailers:key=Qmlops-Decision,valueonly)") == "blocked"


def test_the_shared_calibrations_folder_is_no_model_of_the_registry(repos: Repos) -> None:
    work = repos.clone("calibrated")
    repos.commit_file(work, "registry/calibrations/fake_manila/abc.json", "{}\n", "a calibration snapshot")
    repos.commit_file(work, "registry/demo/tiny/ledger.jsonl", "", "a model's folder")
    registry = Registry(work)
    assert registry.models() == [("demo", "tiny")]
    assert registry.models_in_history() == [("demo", "tiny")]


def _counting(registry: Registry) -> list[str]:
    """The git commands ``registry`` runs from now on (their first word)."""
    ran: list[str] = []
    real = registry.git.run

    def run(*args: str, **kwargs: object) -> object:
        words = [a for a in args if not a.startswith("-")]
        ran.append(words[0] if words else "")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    registry.git.run = run  # type: ignore[method-assign]
    return ran


def test_a_sync_in_step_with_the_remote_asks_no_ancestry_and_lists_no_commits(repos: Repos) -> None:
    registry = Registry(repos.clone("work"))
    registry.record("demo", "m", at=AT, kind="blocked", version=None, message="one")
    assert registry.publish().pushed
    ran = _counting(registry)
    assert registry.sync() == []
    assert "fetch" in ran and "merge-base" not in ran and "log" not in ran, ran
    assert not registry.publish().pushed and "log" not in ran, ran


def test_a_second_push_does_not_look_at_the_branchs_upstream_again(repos: Repos) -> None:
    registry = Registry(repos.clone("work"))
    registry.record("demo", "m", at=AT, kind="blocked", version=None, message="one")
    assert registry.publish().pushed
    ran = _counting(registry)
    registry.record("demo", "m", at=AT, kind="blocked", version=None, message="two")
    assert registry.publish().pushed
    assert "config" not in ran and "symbolic-ref" not in ran, ran
    assert git(repos.remote, "rev-parse", "main") == registry.git.head()


def test_a_sync_behind_or_ahead_of_the_remote_still_integrates_and_publishes(repos: Repos) -> None:
    a, b = Registry(repos.clone("a")), Registry(repos.clone("b"))
    a.record("demo", "one", at=AT, kind="blocked", version=None, message="one")
    a.publish()
    b.sync()
    assert b.ledger("demo", "one").entries[0].message == "one", "behind: brought up to date"
    b.record("demo", "two", at=AT, kind="blocked", version=None, message="two")
    b.sync()  # ahead: what it decided is pushed
    assert git(repos.remote, "rev-parse", "main") == b.git.head()


def test_a_sync_behind_the_remote_fast_forwards_without_asking_ancestry(repos: Repos) -> None:
    a, b = Registry(repos.clone("a")), Registry(repos.clone("b"))
    a.record("demo", "one", at=AT, kind="blocked", version=None, message="one")
    a.publish()
    ran = _counting(b)
    assert b.sync() == []
    assert b.git.head() == git(repos.remote, "rev-parse", "main")
    assert "merge-base" not in ran and ran.count("merge") == 1, ran
