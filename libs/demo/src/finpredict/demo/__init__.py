"""The main job: ``finpredict demo`` runs the story (:mod:`.story`, its chapters, its report);
``finpredict replay`` replays synthetic traffic through a running monitor (:mod:`.replay`)."""
