"""Shared feature computation: one code path for training and serving."""
