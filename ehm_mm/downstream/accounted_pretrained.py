# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Backbone mixin: load a pretrained encoder with every key accounted for."""
from typing import Dict, Optional, Sequence, Tuple

from mmengine.logging import print_log
from torch import Tensor

from .encoder_checkpoint import load_encoder
from .key_accounting import KeyReport, load_state_dict_accounted


class AccountedPretrainedMixin:
    """``init_weights`` that loads ``init_cfg=dict(type='Pretrained')``
    strictly: every missing or unexpected key must match an allowed pattern,
    otherwise ``ValueError`` (see :func:`load_state_dict_accounted`).

    The host class calls :meth:`_init_accounting` in ``__init__`` and may
    override :meth:`adapt_pretrained` (e.g. to resize the position
    embedding). Any other ``init_cfg`` falls back to the host's own
    ``init_weights``.
    """

    #: Model weights a pretrained encoder cannot hold (regular expressions).
    NEW_WEIGHTS: Tuple[str, ...] = ()
    #: Pretrained weights the host does not use (regular expressions).
    UNUSED_WEIGHTS: Tuple[str, ...] = ()

    checkpoint_source: str
    allowed_missing: Tuple[str, ...]
    allowed_unexpected: Tuple[str, ...]
    pretrained_report: Optional[KeyReport]

    def _init_accounting(
            self,
            checkpoint_source: str,
            allowed_missing: Optional[Sequence[str]] = None,
            allowed_unexpected: Optional[Sequence[str]] = None) -> None:
        """Store the loading options.

        Args:
            checkpoint_source (str): ``'student'`` or ``'teacher'``.
            allowed_missing (Sequence[str], optional): Regular expressions
                of model weights the checkpoint may lack. Defaults to None
                (:attr:`NEW_WEIGHTS`).
            allowed_unexpected (Sequence[str], optional): Regular
                expressions of checkpoint weights the model may ignore.
                Defaults to None (:attr:`UNUSED_WEIGHTS`).
        """
        self.checkpoint_source = checkpoint_source
        self.allowed_missing = tuple(
            self.NEW_WEIGHTS if allowed_missing is None else allowed_missing)
        self.allowed_unexpected = tuple(
            self.UNUSED_WEIGHTS
            if allowed_unexpected is None else allowed_unexpected)
        self.pretrained_report = None

    def adapt_pretrained(self,
                         state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Adapt the encoder weights to this backbone before loading.

        Args:
            state_dict (Dict[str, Tensor]): The pretrained encoder.

        Returns:
            Dict[str, Tensor]: The weights to load. Unchanged by default.
        """
        return state_dict

    def init_weights(self) -> None:
        """Initialise, loading the pretrained encoder with key accounting.

        Raises:
            ValueError: If ``init_cfg`` has no ``checkpoint`` or the load
                leaves an unaccounted key.
        """
        init_cfg = self.init_cfg
        if not (isinstance(init_cfg, dict)
                and init_cfg.get('type') == 'Pretrained'):
            super().init_weights()
            return
        if not init_cfg.get('checkpoint'):
            raise ValueError(
                'init_cfg of type "Pretrained" needs a "checkpoint" path, '
                f'got {init_cfg!r}.')
        encoder = load_encoder(init_cfg['checkpoint'], self.checkpoint_source)
        state_dict = self.adapt_pretrained(dict(encoder.state_dict))
        self.pretrained_report = load_state_dict_accounted(
            self,
            state_dict,
            allowed_missing=self.allowed_missing,
            allowed_unexpected=self.allowed_unexpected,
            what=type(self).__name__)
        print_log(
            f'{type(self).__name__}: {self.checkpoint_source} encoder from '
            f'{init_cfg["checkpoint"]}: {encoder.summary()}; '
            f'{self.pretrained_report.summary()} (missing = new weights '
            f'{self.allowed_missing}, unexpected = unused '
            f'{self.allowed_unexpected})',
            logger='current')
