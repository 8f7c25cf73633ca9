"""Studying zoos: model soups (`soups`), the analysis report (`analysis`, `zoo analyze`), weight-space learning
baselines (`benchmark`, `zoo benchmark`) and the safetensors weight reading they share (`weights`). They read zoos
through `zoo.layout` and evaluate members with `zoo.studies.evaluation`."""
