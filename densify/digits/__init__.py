"""The digit-spotter demo: synthetic printed digits (:mod:`.synth`, which gathers
:mod:`.convention`, :mod:`.glyphs`, :mod:`.textures`, :mod:`.windows` and :mod:`.scenes`), COCO
and VOC detection metrics (:mod:`.coco`, :mod:`.metrics`) and the evaluation run
(:mod:`.evaluation`). An application of densify, outside the core: no core module imports it."""
