"""Analyse a forgetting matrix (DESIGN.md pillar 2).

``forgetscope.analysis.lowrank`` — SVD spectrum, R²(k), additive/multiplicative models, factor
orderings and the forgetting-vs-learning correlation; ``forgetscope.analysis.plots`` — the figures.
Import submodules directly; this package stays light so importing it costs nothing.
"""
