"""One process of a two-process streaming run (test_data_parallel.py); prints JSON.

argv: RANK COORDINATOR_PORT IMAGE_FOLDER WORKDIR
"""

import json
import sys

import jax

rank, port, folder, workdir = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=rank)

from cnnjax.config import base_config  # noqa: E402
from cnnjax.training.train import train_and_evaluate  # noqa: E402

config = base_config()
config.data.name = "image_folder"
config.data.path = folder
config.data.streaming = True
config.data.image_size = 32
config.model.name = "lenet5"
config.batch_size, config.num_epochs, config.eval_batch_size = 8, 2, 16
config.progress_bar, config.tensorboard, config.mesh.data = False, False, 0
summary = train_and_evaluate(config, workdir)
keys = ("steps", "train/loss", "val/accuracy", "eval/accuracy", "eval/loss")
print("RESULT " + json.dumps({"rank": rank, "devices": jax.device_count(), **{k: summary[k] for k in keys}}))
