"""Method configs for tests, built the way the pipeline builds them: from the params schema's defaults (the
embedded profile), with a test's overrides and no backbone checkpoint."""

from typing import Any

from bench.bestie_family import make_config
from bench.config.schema import BestieParams


def bestie_config(**overrides: Any) -> Any:
    """:class:`methods.bestie.train.BestieConfig` of the schema's ``bestie`` defaults with ``overrides`` (any
    config field: ``min_area=1``, ``scale_range=(1.0, 1.0)``, ``cluster=None``, ``supervision="image"``)."""
    supervision = overrides.pop("supervision", "points")
    return make_config(BestieParams(), supervision, overrides.pop("seed", 0), {"backbone_weights": None, **overrides})


def p2seg_config(bestie: Any, **overrides: Any) -> Any:
    """:class:`methods.p2seg.train.P2SegConfig` of the schema's ``mdm`` defaults (the ``hrnet`` row) on ``bestie``,
    with ``overrides``."""
    import dataclasses

    from bench.commands.p2seg import VARIANTS, make_p2seg_config
    from bench.config.schema import Params

    return dataclasses.replace(make_p2seg_config(Params(), VARIANTS.get("hrnet"), 0), bestie=bestie, **overrides)
