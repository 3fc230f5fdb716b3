"""The daemon's worker (APScheduler-driven deadline sweeps): see the next issue.

Until it lands, `workflows.engine.Engine.fire_due_deadlines` fires due deadlines on demand.
"""
