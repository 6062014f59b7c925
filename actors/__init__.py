"""Thin Ray actors over vrt_ray: rollout workers, reference policy, verifier, learner group."""
