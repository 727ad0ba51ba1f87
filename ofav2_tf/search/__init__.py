"""Search over a trained supernet: accuracy predictor, cost objectives, NSGA-II and OFA's evolution.

Modules: `genome` (a config as a vector of integer choices), `encoding` (predictor features),
`predictor_data` (the evaluated-sub-network cache), `predictor` (accuracy predictor),
`objectives` (cost objectives and budgets), `nsga` (multi-objective search through pymoo),
`evolution` (OFA's single-objective baseline), `pareto` (result file and plot).
"""
