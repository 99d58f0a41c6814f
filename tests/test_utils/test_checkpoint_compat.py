# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub

import ehm_mm  # noqa: F401  (registers the safe globals)
from ehm_mm.utils.checkpoint_compat import (
    checkpoint_safe_globals,
    history_buffer_getattr,
)


def test_message_hub_state_loads_with_weights_only(tmp_path):
    hub = MessageHub.get_instance('ehm_compat_test')
    hub.update_scalar('train/loss', 0.5)
    hub.update_scalar('train/loss', np.float64(0.25))
    hub.update_info('iter', 3)
    hub.update_info('array', np.arange(3))
    path = tmp_path / 'state.pth'
    torch.save(dict(message_hub=hub.state_dict()), path)

    state = torch.load(path, map_location='cpu', weights_only=True)
    scalars = state['message_hub']['log_scalars']
    assert isinstance(scalars['train/loss'], HistoryBuffer)
    assert scalars['train/loss'].current() == 0.25
    assert scalars['train/loss'].mean() == pytest.approx(0.375)
    assert state['message_hub']['runtime_info']['iter'] == 3
    np.testing.assert_array_equal(
        state['message_hub']['runtime_info']['array'], np.arange(3))


def test_restricted_getattr():
    assert history_buffer_getattr(HistoryBuffer, 'mean') is HistoryBuffer.mean
    with pytest.raises(pickle.UnpicklingError, match='only allows'):
        history_buffer_getattr(HistoryBuffer, '__init__')
    with pytest.raises(pickle.UnpicklingError, match='only allows'):
        history_buffer_getattr(torch, 'load')


def test_arbitrary_getattr_still_rejected(tmp_path):
    """A pickle calling getattr on anything else must still fail."""

    class Evil:

        def __reduce__(self):
            return getattr, (HistoryBuffer, '__init__')

    path = tmp_path / 'evil.pth'
    torch.save({'x': Evil()}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


def test_allow_list_is_narrow():
    for entry in checkpoint_safe_globals():
        obj = entry[0] if isinstance(entry, tuple) else entry
        module = getattr(obj, '__module__', '')
        assert module.startswith(('numpy', 'mmengine.logging',
                                  'ehm_mm.utils')), obj
