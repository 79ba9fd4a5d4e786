import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# One intra-op thread: on two cores, two OpenMP threads spin-wait on each other whenever anything else
# runs (a subprocess a test starts, a server thread), several times slower than one (measured).
torch.set_num_threads(1)

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


@pytest.fixture(scope="session")
def shared_data() -> str:
    path = os.path.abspath(SHARED_DATA)
    if not os.path.isdir(path):
        pytest.skip(f"shared data not found at {path}")
    return path


@pytest.fixture(scope="session")
def tiny_backbones(tmp_path_factory):
    """Tiny LLaVA-OneVision + SAM (+ a tiny LLaVA-1.5 under llava15/) saved with save_pretrained."""
    from agvas.model.tiny import build_tiny_llava15, build_tokenizer, write_tiny_backbones

    folder = tmp_path_factory.mktemp("tiny-backbones")
    write_tiny_backbones(folder, seed=0)
    torch.manual_seed(1)
    tokenizer = build_tokenizer()
    build_tiny_llava15(tokenizer).save_pretrained(folder / "llava15")
    tokenizer.save_pretrained(folder / "llava15")
    return folder
