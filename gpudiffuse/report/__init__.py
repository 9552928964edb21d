"""The report of a processed folder: figures (matplotlib, Agg) of the map, the profile, the
statistics, the scaling model and the masks, as HTML and PDF (``steps.report.run_report``)."""
