"""Files in and out: image reading and validation (:mod:`.image`), atomic output files
(:mod:`.files`), heatmap overlays and boxes (:mod:`.draw`). No torch model code here."""
