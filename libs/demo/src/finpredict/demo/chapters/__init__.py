"""The demo story's chapters: functions of the :class:`~finpredict.demo.story.Story` they tell."""
