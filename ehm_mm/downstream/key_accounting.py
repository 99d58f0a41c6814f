# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Load a state dict and account for every key, instead of ``strict=False``.

``load_state_dict(strict=False)`` silently ignores a checkpoint whose keys
do not match (wrong prefix, wrong layout): the model then trains from
scratch and the pretraining numbers do not reproduce. Here a load is
allowed to leave keys out only where the caller names them, as regular
expressions over whole key names:

- ``allowed_missing``: model weights the checkpoint cannot hold because
  the downstream model adds them (e.g. relative position tables);
- ``allowed_unexpected``: pretrained weights the downstream model does not
  use (e.g. the CLS token in ViTDet).

Anything else, or any shape mismatch, raises :class:`ValueError`.
"""
import re
from dataclasses import dataclass, field
from typing import List, Mapping, Sequence, Tuple

from torch import Tensor, nn

__all__ = [
    'KeyReport', 'account_keys', 'check_key_report',
    'load_state_dict_accounted'
]


@dataclass
class KeyReport:
    """Which checkpoint keys a model takes, lacks or does not know.

    Args:
        loaded (list[str]): Keys in both, with equal shapes.
        missing (list[str]): Model keys absent from the checkpoint.
        unexpected (list[str]): Checkpoint keys the model does not have.
        mismatched (list[tuple]): ``(key, checkpoint shape, model shape)``
            for keys in both whose shapes differ. Defaults to [].
    """

    loaded: List[str]
    missing: List[str]
    unexpected: List[str]
    mismatched: List[Tuple[str, tuple, tuple]] = field(default_factory=list)

    def summary(self) -> str:
        """One line with the four counts.

        Returns:
            str: e.g. ``'loaded 52 / missing 8 / unexpected 2 / shape
            mismatch 0'``.
        """
        return (f'loaded {len(self.loaded)} / missing {len(self.missing)} / '
                f'unexpected {len(self.unexpected)} / '
                f'shape mismatch {len(self.mismatched)}')


def account_keys(model_state: Mapping[str, Tensor],
                 state_dict: Mapping[str, Tensor]) -> KeyReport:
    """Compare a model's state dict with a checkpoint, key by key.

    Args:
        model_state (Mapping[str, Tensor]): ``model.state_dict()``.
        state_dict (Mapping[str, Tensor]): The weights to load.

    Returns:
        KeyReport: The comparison, keys in checkpoint / model order.
    """
    loaded, unexpected, mismatched = [], [], []
    for key, value in state_dict.items():
        if key not in model_state:
            unexpected.append(key)
        elif tuple(value.shape) != tuple(model_state[key].shape):
            mismatched.append(
                (key, tuple(value.shape), tuple(model_state[key].shape)))
        else:
            loaded.append(key)
    missing = [key for key in model_state if key not in state_dict]
    return KeyReport(loaded, missing, unexpected, mismatched)


def _not_allowed(keys: Sequence[str], patterns: Sequence[str]) -> List[str]:
    return [
        key for key in keys
        if not any(re.fullmatch(pattern, key) for pattern in patterns)
    ]


def check_key_report(report: KeyReport,
                     allowed_missing: Sequence[str] = (),
                     allowed_unexpected: Sequence[str] = (),
                     what: str = 'model') -> None:
    """Raise unless every missing / unexpected key is an allowed one.

    Args:
        report (KeyReport): The result of :func:`account_keys`.
        allowed_missing (Sequence[str]): Regular expressions (whole-key
            match) for model keys the checkpoint may lack. Defaults to ().
        allowed_unexpected (Sequence[str]): Regular expressions for
            checkpoint keys the model may ignore. Defaults to ().
        what (str): Name of the model, for the error message.
            Defaults to ``'model'``.

    Raises:
        ValueError: On a shape mismatch or a key not covered by the
            allowed patterns; the message lists the offending keys.
    """
    problems = []
    bad_missing = _not_allowed(report.missing, allowed_missing)
    bad_unexpected = _not_allowed(report.unexpected, allowed_unexpected)
    if bad_missing:
        problems.append(f'{len(bad_missing)} {what} weight(s) missing from '
                        f'the checkpoint: {bad_missing[:10]}')
    if bad_unexpected:
        problems.append(f'{len(bad_unexpected)} checkpoint weight(s) the '
                        f'{what} does not have: {bad_unexpected[:10]}')
    if report.mismatched:
        problems.append(f'{len(report.mismatched)} shape mismatch(es) '
                        f'(key, checkpoint, {what}): {report.mismatched[:5]}')
    if problems:
        raise ValueError(
            f'Incomplete pretrained load ({report.summary()}): ' +
            '; '.join(problems) + '. Convert the checkpoint with '
            'tools/model_converters/ or check that the config matches the '
            'pretrained architecture.')


def load_state_dict_accounted(module: nn.Module,
                              state_dict: Mapping[str, Tensor],
                              allowed_missing: Sequence[str] = (),
                              allowed_unexpected: Sequence[str] = (),
                              what: str = 'model') -> KeyReport:
    """Load ``state_dict`` into ``module`` after checking every key.

    Nothing is loaded when the check fails.

    Args:
        module (nn.Module): The model to load into.
        state_dict (Mapping[str, Tensor]): The weights, already in the
            module's layout (prefixes stripped, position embeddings
            resized).
        allowed_missing (Sequence[str]): See :func:`check_key_report`.
            Defaults to ().
        allowed_unexpected (Sequence[str]): See :func:`check_key_report`.
            Defaults to ().
        what (str): Name of the model for messages. Defaults to
            ``'model'``.

    Returns:
        KeyReport: What was loaded, missing and unexpected.

    Raises:
        ValueError: If the check fails.
    """
    report = account_keys(module.state_dict(), state_dict)
    check_key_report(report, allowed_missing, allowed_unexpected, what)
    incompatible = module.load_state_dict(
        {key: state_dict[key]
         for key in report.loaded}, strict=False)
    # A load_state_dict pre-hook of the module could still rename keys.
    if (incompatible.unexpected_keys
            or sorted(incompatible.missing_keys) != sorted(report.missing)):
        raise RuntimeError(
            f'{what} did not take the accounted keys: {incompatible}')
    return report
