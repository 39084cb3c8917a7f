"""Files in and out: image reading and validation (:mod:`.image`, with :mod:`.headers` read
before decoding), atomic output files (:mod:`.files`), scan records (:mod:`.records`), and
drawing from arrays: heatmap overlays and boxes (:mod:`.draw`), the notebook preview and figure
(:mod:`.display`), contact sheets (:mod:`.sheet`) and the static HTML report of a batch
(:mod:`.report`). No torch model code here."""
