"""The bundled demo pipeline file is valid as shipped: every section's keys known, its settings resolvable."""

import configs
from flows.evaluate import eval_config
from flows.pipeline import Pipeline


def test_the_demo_pipeline_loads_and_its_evaluation_settings_resolve():
    spec = Pipeline.load(configs.path("pipelines/demo.yaml"))
    cfg = spec.evaluate_config
    assert cfg == eval_config(spec.evaluate_settings(), list(spec.evaluate.overrides))
    s = cfg.supervised
    assert "supervised" in cfg.baselines and s.epochs <= 3 and s.img_size <= 64 and s.min_steps == 0
