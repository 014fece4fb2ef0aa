"""The reviewer's side of the feedback loop: review queues, the review page and the Label Studio round-trip."""
