"""flowjax_thesis: normalizing flows and probabilistic models of the thesis, in JAX."""
