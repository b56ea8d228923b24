"""Reconciling the registry's resources in Git: the engine both shells drive.

A reconcile is a sequence of steps (``steps.py``) that read state (``state.py``) and return intents
(``intents.py``); the effects (``recorder.py``) carry the intents out: the Git recorder for ``run``,
the dry run for ``plan``. The actions kinds share (train-and-register, evaluate, approve, promote) are
in ``actions.py``; training workspaces, one per training, in ``workspace.py``. ``ModelReconciler``
(``model.py``) reconciles a QuantumModel.
"""

from controller.engine.reconcile.actions import TrainingDue
from controller.engine.reconcile.model import ModelReconciler, Outcome, Plan, Reconciler
from controller.engine.reconcile.recorder import Decision
from controller.engine.reconcile.services import CredentialsLookup, TrainerFn
from controller.engine.reconcile.state import Due, Observed, State, training, training_due, utcnow
from controller.engine.reconcile.workspace import Workspace, Workspaces

__all__ = [
    "CredentialsLookup",
    "Decision",
    "Due",
    "ModelReconciler",
    "Observed",
    "Outcome",
    "Plan",
    "Reconciler",
    "State",
    "TrainerFn",
    "TrainingDue",
    "Workspace",
    "Workspaces",
    "training",
    "training_due",
    "utcnow",
]
