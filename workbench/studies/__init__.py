"""The studies floor: one folder per study (``localization/``, ...), each with its protocol (pairs,
splits, selection on validation, baselines), its job (what runs the model and writes results) and
its report (tables and figures from the results; ``python -m workbench.studies.<name>.report
--update-doc``). Studies run models; ``workbench.analysis`` below them never does."""
