"""The main job: ``finpredict demo`` runs the story; ``finpredict replay`` replays synthetic traffic through a monitor."""
