"""The studies floor: one folder per study (``localization/``, ...), each with its protocol (pairs,
splits, selection on validation, baselines), its job (what runs the model and writes results) and
its report (tables and figures from the results; ``python -m workbench.studies.<name>.report
--update-doc``). Jobs that run a model over many items resume through ``workbench.store`` (an
``ItemStore`` or a ``StoreJob``). Studies run models; ``workbench.analysis`` below them never does."""
