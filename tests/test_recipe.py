"""Issue 20's switches ("learn more per token"), each with known answers: dropout that is off in eval."""
from dataclasses import replace

import pytest
import torch
from conftest import TINY

from arc.model.transformer import Transformer

pytestmark = pytest.mark.usefixtures("one_thread")


# --- dropout ------------------------------------------------------------------------------------------------


def test_dropout_is_off_in_eval_mode_and_on_in_train_mode():
    torch.manual_seed(0)
    plain = Transformer(TINY).eval()
    dropped = Transformer(replace(TINY, dropout=0.5))
    dropped.load_state_dict(plain.state_dict())  # the same weights: dropout has none
    tokens = torch.randint(0, 10, (2, 12))
    dropped.eval()
    assert torch.equal(dropped(tokens), plain(tokens))
    dropped.train()
    assert not torch.allclose(dropped(tokens), plain(tokens))
