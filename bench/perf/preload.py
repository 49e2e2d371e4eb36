"""What every ``bench perf`` child imports, imported once by the fork server.

diffusers and transformers import their model classes lazily, on first attribute
access, which costs a child 5-15 s before it measures anything; the fork server imports
them here once, and each child forks with them in place. Imports only: no tensor is
created, so no thread pool exists yet when the server forks (see
:func:`cloakbench.bench.perf.runner.run_config`).
"""

from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel  # noqa: F401
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0  # noqa: F401
from torch.utils import flop_counter  # noqa: F401
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: F401

import cloakbench.bench.perf.optimisations
import cloakbench.bench.perf.worker
import cloakbench.core.zoo  # noqa: F401
from cloakbench import protections  # noqa: F401
