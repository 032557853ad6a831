"""A survival federation: time to relapse (months) with censoring, a Cox model, 3 hospitals."""
