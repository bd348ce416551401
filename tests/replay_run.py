"""rlvr_min.py's CLI with recorded rollouts: `python tests/replay_run.py ROLLOUTS.json [rlvr_min flags]`.

The first run (one process) samples as usual and records every prompt's responses into ROLLOUTS.json; later runs, under
torchrun too, replay them. Sampling depends on how the prompts are split over processes, so this is how
tests/test_distributed.py gives one process and N processes the same batch.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import infra  # noqa: E402
import rlvr_min  # noqa: E402


class ReplayEngine:
    def __init__(self, engine, path: Path):
        self.engine, self.path = engine, path
        self.recorded = json.loads(path.read_text()) if path.exists() else None

    def generate(self, prompts, n, temperature, top_p, max_new_tokens, seed):
        if self.recorded is None:
            responses = self.engine.generate(prompts, n, temperature, top_p, max_new_tokens, seed)
            if temperature > 0:  # rollouts, not the greedy evaluation
                table = {json.dumps(p): responses[i * n : (i + 1) * n] for i, p in enumerate(prompts)}
                self.path.write_text(json.dumps(table))
            return responses
        if temperature == 0:
            return self.engine.generate(prompts, n, temperature, top_p, max_new_tokens, seed)
        return [response for p in prompts for response in self.recorded[json.dumps(p)]]

    def sync(self, model):
        self.engine.sync(model)


def load_policy(config, weights=None):
    model, tokenizer, engine = original_load_policy(config, weights)
    return model, tokenizer, ReplayEngine(engine, Path(sys.argv[1]))


original_load_policy, infra.load_policy = infra.load_policy, load_policy

if __name__ == "__main__":
    rlvr_min.main(sys.argv[2:])
