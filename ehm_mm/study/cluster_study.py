# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""The runs of a study whose config lists ``study_evaluation``."""
from typing import Callable, Dict, List, Optional, Sequence

from mmengine.config import Config

from .evaluation_stages import (
    EvaluationStage,
    load_stage_config,
    seeded_stage_config,
)
from .run_chain import RunChain


class ClusterStudy:
    """Builds the :class:`RunChain` of each (arm, seed) of a study.

    The stage configs are read once and given each run's seed, so the
    digests of all runs (which the report checks every result against)
    cost one read per stage.

    Args:
        stages (Sequence[EvaluationStage]): The evaluation chain.
        pretrain_config (Callable): ``(arm, seed) -> Config``, the run's
            pretraining config, free of anything that depends on the
            machine building it (the launching host may have no GPU).
        config_digest (Callable): ``Config -> str``, the digest of a
            pretraining config.
        tools_dir (str): The folder of ``train.py`` and ``test.py``.
    """

    def __init__(self, stages: Sequence[EvaluationStage],
                 pretrain_config: Callable[[str, int], Config],
                 config_digest: Callable[[Config], str],
                 tools_dir: str) -> None:
        self.stages = list(stages)
        self.pretrain_config = pretrain_config
        self.config_digest = config_digest
        self.tools_dir = tools_dir
        self._stage_cfgs: Dict[str, Config] = {}

    def stage_configs(self, seed: int) -> List[Optional[Config]]:
        """The stage configs with ``seed`` (each file read once); None for
        a stage that ``requires`` packages (read when it runs, where they
        are installed)."""
        configs = []
        for stage in self.stages:
            if stage.requires:
                configs.append(None)
                continue
            if stage.name not in self._stage_cfgs:
                self._stage_cfgs[stage.name] = load_stage_config(stage)
            configs.append(
                seeded_stage_config(self._stage_cfgs[stage.name], seed))
        return configs

    def chain(self, arm: str, seed: int, folder: str) -> RunChain:
        """The chain of run ``(arm, seed)`` in ``folder``.

        Args:
            arm (str): Arm name.
            seed (int): Seed.
            folder (str): The run's folder.

        Returns:
            RunChain: Ready for :func:`~ehm_mm.study.run_chain.run_chain`.
        """
        cfg = self.pretrain_config(arm, seed)
        return RunChain(
            arm=arm, seed=seed, folder=folder, pretrain_cfg=cfg,
            pretrain_digest=self.config_digest(cfg), stages=self.stages,
            stage_cfgs=self.stage_configs(seed), tools_dir=self.tools_dir)

    def digest(self, arm: str, seed: int) -> str:
        """The config digest run ``(arm, seed)``'s ``result.json`` records.

        Args:
            arm (str): Arm name.
            seed (int): Seed.

        Returns:
            str: :attr:`RunChain.digest`.
        """
        return self.chain(arm, seed, '').digest
