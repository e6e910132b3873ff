"""Register a fitted cost model: its files, feature spec, config, metrics and training facts."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

from core.registry import ModelRegistry
from training.cost.model import CATEGORICAL, FEATURES, INCREASING, CostModel, component_features
from training.cost.schema import COMPONENTS
from training.settings import TrainingConfig


def publish_cost_model(registry: ModelRegistry, model_id: str, model: CostModel, config: TrainingConfig,
                       metrics: dict[str, Any], *, training: dict[str, Any], activate: bool,
                       may_activate: bool) -> int:
    """Register a fitted cost model with its feature spec, config, metrics and training facts; its version
    (`may_activate`: whether a promotion that follows may activate it; ModelRegistry.publish)."""
    spec = {"features": FEATURES, "categorical": CATEGORICAL, "vocab": model.vocab,
            "increasing": sorted(INCREASING), "component_features": {c: component_features(c) for c in COMPONENTS}}
    spec_hash = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    # the version is published from this folder: a leftover copy must not fail the published retraining
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as folder:
        model.save(Path(folder))
        metadata = registry.publish(model_id, Path(folder), model_type="lightgbm", data_span=None, feature_spec=spec,
                                    feature_spec_hash=spec_hash, config=config.model_dump(mode="json"),
                                    metrics=metrics, training=training, activate=activate,
                                    may_activate=may_activate)
    return metadata.version
