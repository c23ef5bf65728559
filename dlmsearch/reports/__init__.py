"""Reports: plain data first (tested), then plotly figures, then self-contained HTML."""

from dlmsearch.reports.sinks import SinkReportData, run_sinks, sink_figures, sink_report_data, write_sink_report

__all__ = [
    "SinkReportData",
    "run_sinks",
    "sink_figures",
    "sink_report_data",
    "write_sink_report",
]
