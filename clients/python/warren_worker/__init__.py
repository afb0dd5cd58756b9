"""Write Warren job kinds in Python; the Rust worker hosts them in child processes and gives
them its delivery path (confirms, retries, dead letters, poison counting, drain, metrics).

    import warren_worker

    @warren_worker.kind("text.upper", time_limit=10)
    def upper(job: dict, cx: warren_worker.Context) -> dict:
        return {"text": job["text"].upper()}

The stock worker serves them with ``[python] modules`` (docs/python-kinds.md): it runs this
package's child (``python -m warren_worker.child MODULE``), which speaks ``_protocol``'s frames."""

from ._kinds import Context, KindSpec, Permanent, Transient, clear, kind, registered

__all__ = ["Context", "KindSpec", "Permanent", "Transient", "clear", "kind", "registered"]
