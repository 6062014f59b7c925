"""Generation backends behind one interface: `hf` (transformers, CPU default) and `vllm` (GPU)."""
