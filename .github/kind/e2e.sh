#!/usr/bin/env bash
# The kind end-to-end job's steps (.github/workflows/kind-e2e.yml), one subcommand each, run from the
# repository root against the cluster kubectl points at:
#
#   e2e.sh image            build the qmlops image and load it into the kind cluster
#   e2e.sh cert-manager     install cert-manager from its release manifest, wait for its webhook
#   e2e.sh git-server       serve the GitOps repository in the cluster (.github/kind/git-server.yaml)
#   e2e.sh seed             commit the model spec (.github/kind/model.yaml) to that repository
#   e2e.sh operator         apply crds/ and deploy/ (through .github/kind/qmlops/), wait until it serves
#   e2e.sh apply            apply the model, annotated with the commit it was read at
#   e2e.sh wait-ready       kubectl wait --for=condition=Ready quantummodel/... and check its status
#   e2e.sh check-decisions  the operator's decision commits, pushed to the repository
#   e2e.sh delete           delete the model, wait until it is gone; its versions stay in Git
#   e2e.sh diagnostics      what to read when a step failed
#
# Settings come from the environment (the workflow's env): CLUSTER (kind cluster name), IMAGE (the tag
# the manifests run), CERT_MANAGER_VERSION, and READY_TIMEOUT.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
KIND_DIR="$ROOT/.github/kind"
CLUSTER="${CLUSTER:-qmlops-e2e}"
IMAGE="${IMAGE:-qmlops:e2e}"
CERT_MANAGER_VERSION="${CERT_MANAGER_VERSION:-v1.16.2}"
READY_TIMEOUT="${READY_TIMEOUT:-10m}"

NAMESPACE=qmlops-e2e
MODEL=e2e-tiny
SPEC_PATH=specs/e2e-tiny.yaml
BARE=/srv/git/models.git
REPOSITORY=git://qmlops-git.qmlops-e2e.svc.cluster.local/models.git
OPERATOR_NAMESPACE=qmlops-system
# Who the operator commits as (controller/operator/settings.py, OperatorConfig.commit_identity).
OPERATOR_IDENTITY="qmlops-operator <qmlops-operator@qmlops.io>"

log() { printf '\n== %s\n' "$*"; }
fail() {
  printf 'e2e: %s\n' "$*" >&2
  exit 1
}

# retry N SECONDS COMMAND...: for what is refused while a webhook is starting (cert-manager's, ours).
retry() {
  local attempts=$1 pause=$2 attempt
  shift 2
  for ((attempt = 1; attempt <= attempts; attempt++)); do
    if "$@"; then
      return 0
    fi
    printf 'e2e: attempt %d/%d failed: %s\n' "$attempt" "$attempts" "$*" >&2
    sleep "$pause"
  done
  return 1
}

# git in the git server's container, on the bare repository.
remote_git() {
  kubectl -n "$NAMESPACE" exec deploy/qmlops-git -c git-daemon -- git --git-dir="$BARE" "$@"
}

# The commit `seed` made: the history's only root.
seeded_commit() {
  remote_git rev-list --max-parents=0 main
}

image() {
  log "build $IMAGE and load it into kind cluster $CLUSTER"
  docker build --tag "$IMAGE" "$ROOT"
  kind load docker-image "$IMAGE" --name "$CLUSTER"
}

cert_manager() {
  log "cert-manager $CERT_MANAGER_VERSION"
  kubectl apply -f "https://github.com/cert-manager/cert-manager/releases/download/${CERT_MANAGER_VERSION}/cert-manager.yaml"
  kubectl -n cert-manager wait --for=condition=Available --timeout=5m \
    deployment/cert-manager deployment/cert-manager-cainjector deployment/cert-manager-webhook
}

git_server() {
  log "the GitOps repository, served in the cluster"
  kubectl apply -f "$KIND_DIR/git-server.yaml"
  kubectl -n "$NAMESPACE" rollout status deployment/qmlops-git --timeout=3m
}

seed() {
  log "commit $SPEC_PATH to $REPOSITORY"
  # A first commit made in the server's container (it has git), read from stdin, pushed to the bare
  # repository beside it: the operator clones a branch that exists.
  kubectl -n "$NAMESPACE" exec -i deploy/qmlops-git -c git-daemon -- sh -eu -c '
    work=$(mktemp -d)
    git init --quiet --initial-branch=main "$work"
    mkdir -p "$work/$(dirname "$1")"
    cat > "$work/$1"
    git -C "$work" add -- "$1"
    git -C "$work" -c user.name="qmlops e2e" -c user.email=e2e@example.invalid commit --quiet -m "specs: e2e-tiny"
    git -C "$work" push --quiet "$2" main
    rm -rf "$work"
  ' seed "$SPEC_PATH" "$BARE" < "$KIND_DIR/model.yaml"
  remote_git log --oneline main
}

operator() {
  log "crds/ and deploy/ (image $IMAGE, repository $REPOSITORY)"
  kubectl apply -f "$ROOT/crds/"
  kubectl wait --for=condition=Established --timeout=1m crd/quantummodels.qmlops.io crd/quantumpipelines.qmlops.io
  # cert-manager's own webhook may refuse the Issuer for a few seconds after it reports Available.
  retry 12 5 kubectl apply -k "$KIND_DIR/qmlops/"
  kubectl -n "$OPERATOR_NAMESPACE" wait --for=condition=Ready --timeout=3m certificate/qmlops-webhook
  kubectl -n "$OPERATOR_NAMESPACE" rollout status deployment/qmlops-operator --timeout=5m
  # The API server calls the webhook only with the CA cert-manager injects.
  local attempt
  for ((attempt = 1; attempt <= 60; attempt++)); do
    if [ -n "$(kubectl get validatingwebhookconfiguration qmlops -o jsonpath='{.webhooks[0].clientConfig.caBundle}')" ]; then
      return 0
    fi
    sleep 2
  done
  fail "cert-manager injected no CA into ValidatingWebhookConfiguration qmlops"
}

apply() {
  local sha manifest
  sha="$(seeded_commit)"
  manifest="$(mktemp)"
  log "apply $NAMESPACE/$MODEL as read at main@sha1:$sha"
  # What a GitOps tool does after the commit: the spec from Git, with where it came from.
  kubectl annotate --local -f "$KIND_DIR/model.yaml" -o yaml \
    "qmlops.io/source-repository=$REPOSITORY" \
    "qmlops.io/source-revision=main@sha1:$sha" \
    "qmlops.io/source-path=$SPEC_PATH" > "$manifest"
  # Through the operator's webhook (failurePolicy: Fail): refused while its endpoint is not yet routed.
  retry 12 5 kubectl apply -f "$manifest"
}

wait_ready() {
  log "wait for $NAMESPACE/$MODEL to be Ready (up to $READY_TIMEOUT)"
  kubectl -n "$NAMESPACE" wait --for=condition=Ready --timeout="$READY_TIMEOUT" "quantummodel/$MODEL"
  kubectl -n "$NAMESPACE" get quantummodel "$MODEL"
  local champion revision
  champion="$(kubectl -n "$NAMESPACE" get quantummodel "$MODEL" -o jsonpath='{.status.champion.version}')"
  [ "$champion" = 1 ] || fail "status.champion.version is '$champion', expected 1"
  revision="$(kubectl -n "$NAMESPACE" get quantummodel "$MODEL" -o jsonpath='{.status.source.revision}')"
  [ "$revision" = "main@sha1:$(seeded_commit)" ] || fail "status.source.revision is '$revision', not the seeded commit"
}

check_decisions() {
  log "the decision commits the operator pushed"
  remote_git log --format='%h %an <%ae> %s' main
  local seeded messages decision
  seeded="$(seeded_commit)"
  messages="$(remote_git log --format='%B' "$seeded..main")"
  for decision in registered gate-passed promoted; do
    grep -qx "Qmlops-Decision: $decision" <<< "$messages" || fail "no commit with Qmlops-Decision: $decision"
  done
  grep -qx "Qmlops-Model: $NAMESPACE/$MODEL" <<< "$messages" || fail "no commit names Qmlops-Model: $NAMESPACE/$MODEL"
  # Every commit after the seed is the controller's, and touches only the model's registry folder.
  local authors files
  authors="$(remote_git log --format='%an <%ae>' "$seeded..main" | sort -u)"
  [ "$authors" = "$OPERATOR_IDENTITY" ] || fail "commits by others than the operator: $authors"
  files="$(remote_git log --format= --name-only "$seeded..main" | sort -u | grep -v "^registry/$NAMESPACE/$MODEL/" || true)"
  [ -z "$files" ] || fail "the operator's commits touch files outside registry/$NAMESPACE/$MODEL/: $files"
}

delete() {
  log "delete $NAMESPACE/$MODEL"
  kubectl -n "$NAMESPACE" delete quantummodel "$MODEL" --wait=false
  kubectl -n "$NAMESPACE" wait --for=delete --timeout=3m "quantummodel/$MODEL"
  # The checkpoint ConfigMap, if training left one, goes with its owner; the versions stay in Git.
  remote_git cat-file -e "main:registry/$NAMESPACE/$MODEL/ledger.jsonl" ||
    fail "registry/$NAMESPACE/$MODEL/ledger.jsonl is gone from Git"
}

diagnostics() {
  log "diagnostics"
  kubectl get pods,quantummodels -A -o wide || true
  kubectl -n "$NAMESPACE" describe quantummodel "$MODEL" || true
  kubectl -n "$NAMESPACE" get quantummodel "$MODEL" -o yaml || true
  kubectl -n "$OPERATOR_NAMESPACE" describe deployment/qmlops-operator || true
  kubectl -n "$OPERATOR_NAMESPACE" logs deployment/qmlops-operator --all-containers --tail=400 || true
  kubectl -n "$NAMESPACE" logs deployment/qmlops-git --all-containers --tail=100 || true
  kubectl get events -A --sort-by=.lastTimestamp | tail -n 60 || true
  remote_git log --stat main || true
}

case "${1:-}" in
  image) image ;;
  cert-manager) cert_manager ;;
  git-server) git_server ;;
  seed) seed ;;
  operator) operator ;;
  apply) apply ;;
  wait-ready) wait_ready ;;
  check-decisions) check_decisions ;;
  delete) delete ;;
  diagnostics) diagnostics ;;
  *) fail "usage: e2e.sh image|cert-manager|git-server|seed|operator|apply|wait-ready|check-decisions|delete|diagnostics" ;;
esac
