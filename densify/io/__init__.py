"""Files in and out: image reading and validation (:mod:`.image`), atomic output files
(:mod:`.files`), heatmap overlays and boxes (:mod:`.draw`), contact sheets (:mod:`.sheet`) and
the static HTML report of a batch (:mod:`.report`). No torch model code here."""
