"""The digit-spotter demo: synthetic printed-digit scenes (:mod:`.synth`) and detection metrics
(:mod:`.metrics`). An application of densify, outside the core: no core module imports it."""
