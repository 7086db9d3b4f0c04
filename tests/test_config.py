"""Config dataclasses: one serialization, type checks on construction, flat CLI leaves, help from docstrings."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from monai_gnerf.apps import (
    DemoConfig,
    MainDemoConfig,
    DRRConfig,
    SingleViewJobConfig,
    SparseViewJobConfig,
    TrainPriorJobConfig,
)
from monai_gnerf.apps.cli import Commands
from monai_gnerf.config import config_from_dict, config_leaves, config_to_dict, field_docs, parse_json
from monai_gnerf.engines import PriorConfig, ReconstructionConfig
from monai_gnerf.errors import GeometryError, GnerfInputError
from monai_gnerf.geometry import ProjectionGeometry, load_geometry

JOB_CONFIGS = (DRRConfig, SparseViewJobConfig, DemoConfig, MainDemoConfig, TrainPriorJobConfig, SingleViewJobConfig)


@pytest.mark.parametrize("cls", JOB_CONFIGS)
def test_every_config_round_trips_through_json_data(cls):
    default = cls()
    data = config_to_dict(default)
    assert config_from_dict(cls, data) == default
    assert all(not isinstance(v, tuple) for v in data.values())


@pytest.mark.parametrize(
    ("cls", "field", "value", "message"),
    [
        (DRRConfig, "step_mm", 0.0, r"step_mm must be a number > 0 or null, got 0.0"),
        (DRRConfig, "noise_i0", -1, r"noise_i0 must be a number >= 100 and <= 1e\+09 or null, got -1"),
        (DRRConfig, "mu_water_per_mm", float("nan"), r"mu_water_per_mm must be a number >= 0.001 and <= 1, got nan"),
        (ReconstructionConfig, "final_lr_fraction", 2.0, r"final_lr_fraction must be a number > 0 and <= 1, got 2.0"),
        (ReconstructionConfig, "tv_weight", -1.0, r"tv_weight must be a number >= 0 or null, got -1.0"),
        (ReconstructionConfig, "samples_per_ray", 0, r"samples_per_ray must be an integer >= 1, got 0"),
    ],
)
def test_values_outside_their_range_are_refused_with_the_range(cls, field, value, message):
    with pytest.raises(GnerfInputError, match=message):
        cls(**{field: value})
    assert getattr(cls(), field) != value  # the default itself is inside the range


def test_values_are_converted_or_refused_with_the_field_name():
    assert DRRConfig(views=3.0).views == 3 and isinstance(DRRConfig(step_mm=1).step_mm, float)
    config = config_from_dict(TrainPriorJobConfig, {"prior": {"discriminator_channels": [8, 16], "generator": {"num_samples": 4}}})
    assert config.prior.discriminator_channels == (8, 16) and config.prior.generator.num_samples == 4
    with pytest.raises(GnerfInputError, match=r"views must be an integer >= 1 or null, got 'abc'"):
        DRRConfig(views="abc")
    with pytest.raises(GnerfInputError, match=r"method must be 'joseph', 'trilinear' or 'siddon', got 'raytrace'"):
        DRRConfig(method="raytrace")
    with pytest.raises(GnerfInputError, match=r"max_iterations must be an integer >= 1, got 2.5"):
        ReconstructionConfig(max_iterations=2.5)
    with pytest.raises(GnerfInputError, match=r"unknown PriorConfig field\(s\) \['iterations'\]"):
        config_from_dict(PriorConfig, {"iterations": 4})
    with pytest.raises(GeometryError, match=r"beam must be 'cone' or 'parallel', got 'fan'"):
        ProjectionGeometry.from_dict({**load_geometry("naf").to_dict(), "beam": "fan"})


def test_an_inline_geometry_is_a_geometry_config():
    geometry = load_geometry("difnet")
    config = config_from_dict(DRRConfig, {"geometry": geometry.to_dict()})
    assert config.geometry == geometry
    assert config_from_dict(DRRConfig, config_to_dict(config)) == config


def test_nested_defaults_are_set_once_by_the_outer_config():
    leaves = {leaf.name: leaf for leaf in config_leaves(DemoConfig)}
    assert leaves["budget_s"].default == 90.0 and leaves["budget_s"].path == ("fit", "budget_s")
    assert {leaf.name: leaf.default for leaf in config_leaves(SparseViewJobConfig)}["budget_s"] == 120.0


@dataclasses.dataclass
class _Inner:
    seed: int = 0


@dataclasses.dataclass
class _Outer:
    seed: int = 1
    inner: _Inner = dataclasses.field(default_factory=_Inner)


def test_leaf_names_must_be_unique():
    with pytest.raises(ValueError, match=r"leaf fields of the same name \['seed'\]"):
        config_leaves(_Outer)


def test_docstring_sections_give_the_help_text():
    docs = field_docs(
        """Summary.

        Args:
            alpha: first line
                continued here.
            beta (int): second.

        Returns:
            gamma: not an argument.
        """
    )
    assert docs == {"alpha": "first line continued here.", "beta": "second."}


@pytest.mark.parametrize("name, cls", [("drr", DRRConfig), ("reconstruct", SparseViewJobConfig),
                                       ("demo", MainDemoConfig), ("train_prior", TrainPriorJobConfig),
                                       ("single_view", SingleViewJobConfig)])  # fmt: skip
def test_cli_options_are_the_config_leaves_with_their_defaults_and_help(name, cls):
    command = getattr(Commands, name)
    parameters = inspect.signature(command).parameters
    for leaf in config_leaves(cls):
        assert parameters[leaf.name].default == leaf.default
        assert leaf.doc and f"{leaf.name}: {leaf.doc}" in command.__doc__
    assert "config" not in parameters and "device" in parameters


def test_messages_describe_lists_and_accept_command_line_booleans():
    with pytest.raises(GnerfInputError, match=r"discriminator_channels must be a list, each item an integer >= 1"):
        config_from_dict(PriorConfig, {"discriminator_channels": 5})
    assert config_from_dict(ReconstructionConfig, {"init_fdk": "False"}).init_fdk is False  # fire's text for =False
    with pytest.raises(GnerfInputError, match="init_fdk must be true or false, got 'no'"):
        config_from_dict(ReconstructionConfig, {"init_fdk": "no"})


def test_parse_json_reads_utf16_and_refuses_what_json_loads_would_keep_silently():
    """UTF-16 bytes read like UTF-8; a key given twice (``json.loads`` keeps the last) is an error."""
    assert parse_json('{"a": [1, 2]}'.encode("utf-16"), "x") == {"a": [1, 2]}
    with pytest.raises(GnerfInputError, match=r"^x is not valid JSON: key\(s\) \['a'\] given more than once\.$"):
        parse_json(b'{"a": 1, "b": {"c": 2}, "a": 3}', "x")
    with pytest.raises(GnerfInputError, match=r"key\(s\) \['c'\]"):  # nested objects too
        parse_json(b'{"b": {"c": 2, "c": 2}}', "x")
