"""Models built from the flow foundation (gradient boosted flows, DAP, ...)."""
