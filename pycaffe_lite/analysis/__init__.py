"""Analysis of nets and training runs.

    summarize / format_summary       per-layer shapes, parameters, multiply-adds,
                                     receptive fields, activation memory (summary.py)
    parse_log / save_csv_files       Caffe-style training logs -> train/test rows, CSV (parse_log.py)
    plot_training_log / plot_chart   loss and accuracy curves as PNG (plot.py, needs matplotlib)
"""
from .parse_log import parse_log, save_csv_files
from .plot import plot_chart, plot_training_log
from .summary import LayerSummary, NetSummary, format_summary, summarize, summary_to_dict

__all__ = ["LayerSummary", "NetSummary", "format_summary", "parse_log", "plot_chart", "plot_training_log",
           "save_csv_files", "summarize", "summary_to_dict"]
