"""Analyse forgetting: pure functions of matrices and tables (and of one model, for sharpness); never trains.

``lowrank`` — SVD spectrum, R²(k), additive/multiplicative models, factor orderings and the
forgetting-vs-learning correlation; ``scaling`` — the forgetting laws and their fits; ``sharpness`` —
flatness measures of a model and their correlation with forgetting; ``stats`` — paired tests and
bootstrap intervals; ``plots`` — the figures. Import submodules directly; this package stays light.
"""
