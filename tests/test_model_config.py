"""ModelConfig: JSON round-trip, list normalization, field validation, presets."""

import dataclasses
import json

import numpy as np
import pytest

from model.config import PRESETS, ModelConfig, preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_round_trip_through_json(name):
    cfg = PRESETS[name]
    rebuilt = ModelConfig(**json.loads(json.dumps(cfg.to_dict())))
    assert rebuilt == cfg
    assert isinstance(rebuilt.hidden, tuple)
    assert hash(rebuilt) == hash(cfg)


def test_to_dict_is_json_friendly():
    d = ModelConfig(hidden=(256, 128)).to_dict()
    assert d["hidden"] == [256, 128]
    assert json.loads(json.dumps(d)) == d


def test_list_and_numpy_values_are_normalized():
    cfg = ModelConfig(hidden=[np.int64(32), 16], epochs=np.int32(3), learning_rate=np.float32(0.5))
    assert cfg.hidden == (32, 16)
    assert type(cfg.hidden[0]) is int and type(cfg.epochs) is int
    assert type(cfg.learning_rate) is float


def test_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ModelConfig().epochs = 3


def test_defaults_are_the_seed_architecture():
    cfg = ModelConfig()
    assert cfg.layer_sizes == (784, 10, 10)
    assert cfg == PRESETS["default"]


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("hidden", (0,), r"hidden must be >= 1, got 0"),
        ("hidden", "10", r"hidden must be a tuple"),
        ("hidden", (10.5,), r"hidden must be an integer"),
        ("n_inputs", 0, r"n_inputs must be >= 1"),
        ("n_classes", 1, r"n_classes must be >= 2"),
        ("epochs", 0, r"epochs must be >= 1"),
        ("epochs", True, r"epochs must be an integer, got True"),
        ("batch_size", 0, r"batch_size must be >= 1"),
        ("learning_rate", 0.0, r"learning_rate must be > 0"),
        ("learning_rate", float("nan"), r"learning_rate must be a finite number"),
        ("learning_rate", "0.1", r"learning_rate must be a finite number"),
        ("momentum", 1.0, r"momentum must be in \[0, 1\)"),
        ("lr_schedule", "step", r"lr_schedule must be one of"),
        ("lr_decay", 0.0, r"lr_decay must be in \(0, 1\]"),
        ("init", "xavier", r"init must be one of \('he', 'uniform'\)"),
        ("seed", -1, r"seed must be >= 0"),
        ("validation_fraction", 0.0, r"validation_fraction must be in \(0, 1\)"),
        ("validation_fraction", 1.0, r"validation_fraction must be in \(0, 1\)"),
        ("early_stopping_patience", 0, r"early_stopping_patience must be >= 1"),
    ],
)
def test_bad_fields_raise_one_line_value_errors(field, value, match):
    with pytest.raises(ValueError, match=match) as info:
        ModelConfig(**{field: value})
    assert "\n" not in str(info.value)


def test_preset_applies_overrides_and_validates_them():
    cfg = preset("wide", epochs=2, seed=7)
    assert (cfg.epochs, cfg.seed, cfg.hidden) == (2, 7, PRESETS["wide"].hidden)
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        preset("default", epochs=0)


def test_preset_rejects_unknown_names_and_fields():
    with pytest.raises(ValueError, match=r"unknown preset 'huge'; choose one of"):
        preset("huge")
    with pytest.raises(ValueError, match=r"unknown ModelConfig field\(s\): hiden"):
        preset("default", hiden=(5,))


def test_from_dict_names_unknown_keys():
    d = ModelConfig().to_dict() | {"dropout": 0.5}
    with pytest.raises(ValueError, match=r"unknown ModelConfig field\(s\): dropout"):
        ModelConfig.from_dict(d)
    assert ModelConfig.from_dict(ModelConfig().to_dict()) == ModelConfig()


def test_seed_preset_matches_the_notebook_setup():
    cfg = PRESETS["seed"]
    assert cfg.layer_sizes == (784, 10, 10)
    assert (cfg.init, cfg.learning_rate, cfg.batch_size, cfg.epochs) == ("uniform", 0.1, None, 500)
    assert (cfg.momentum, cfg.lr_schedule) == (0.0, "constant")
