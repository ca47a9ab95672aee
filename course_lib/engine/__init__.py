"""The serving engine (Days 4-5): sequences, a scheduler with static and continuous policies, a model
runner over paged KV, and the vLLM-shaped ``LLM`` facade."""
