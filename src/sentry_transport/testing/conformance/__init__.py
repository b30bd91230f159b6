"""The conformance suite: scripted server behaviours, run against any Transport.

Every backend, ours or a third party's, runs the same scenarios. In a test module:

    import pytest
    from sentry_transport.testing.conformance import *  # noqa: F403 -- scenarios + fixtures

    @pytest.fixture
    def transport_factory():
        return lambda dsn, **options: MyTransport(dsn, **options)

Override ``traits`` (a ``Traits``) if ``capture_envelope`` sends before returning, as a sync
transport's does. Each scenario checks the transport's books against what a live ``Sink``
saw: for every scenario, events accepted == delivered + lost, and the sink answered 2xx to
exactly the delivered ones. Needs pytest (and trustme for the TLS scenarios).
"""

from __future__ import annotations

from ._base import FAST, Make, Traits, make, sink, traits
from .lifecycle import (
    test_close_keeps_its_deadline_and_counts_the_rest,
    test_close_stops_accepting,
    test_close_with_requests_in_flight_leaves_final_books,
    test_flush_keeps_its_deadline,
    test_fork_child_starts_empty,
    test_queue_overflow_is_counted,
    test_recorded_losses_are_reported,
    test_stale_resend_keeps_the_first_deadline,
)
from .network import (
    ca,
    test_bad_tls_file_is_a_configuration_error,
    test_closed_without_answer_is_retried,
    test_compressed_bodies,
    test_connection_refused_is_retried_then_network_error,
    test_hang_on_every_try_ends_as_network_error,
    test_hang_past_the_timeout_is_retried,
    test_http_through_proxy_option,
    test_https_through_proxy_tunnel,
    test_proxy_from_environment_and_no_proxy,
    test_reset_mid_body_is_retried,
    test_tls_client_certificate,
    test_tls_host_name_is_checked,
    test_tls_unknown_ca_is_refused,
    test_tls_verification_can_be_turned_off,
    test_tls_with_custom_ca,
    tls_sink,
)
from .pipelining import (
    test_a_server_answering_one_request_per_connection,
    test_a_server_closing_after_some_answers_gets_the_rest_again,
    test_a_server_ending_its_lines_with_a_bare_lf_is_understood,
    test_a_server_misbehaving_at_random_keeps_the_books_exact,
    test_a_slow_server_gets_many_requests_in_flight_on_a_few_connections,
    test_a_stall_mid_pipeline_is_one_failure_and_the_rest_go_again,
    test_an_answer_nobody_asked_for_is_no_answer_to_the_next_request,
)
from .responses import (
    test_200_delivers_everything_over_keep_alive,
    test_413_before_the_body_is_read_is_a_send_error_and_never_retried,
    test_413_is_a_send_error_and_never_retried,
    test_429_forms,
    test_capture_event_builds_an_envelope,
    test_other_http_errors_are_send_errors,
    test_rate_limit_header_on_200_blocks_that_category,
)
from .spool import (
    test_spool_bound_evicts_the_oldest_as_cache_overflow,
    test_spool_drains_when_the_server_comes_back,
    test_spool_fork_child_spools_its_own_and_leaves_the_parents,
    test_spool_keeps_what_a_down_server_did_not_take_for_the_next_start,
    test_spool_sets_damaged_and_foreign_files_aside,
    test_spool_two_live_transports_send_nothing_twice,
)

__all__ = [
    "FAST",
    "Make",
    "Traits",
    "ca",
    "test_a_server_answering_one_request_per_connection",
    "test_a_server_ending_its_lines_with_a_bare_lf_is_understood",
    "test_an_answer_nobody_asked_for_is_no_answer_to_the_next_request",
    "test_a_server_closing_after_some_answers_gets_the_rest_again",
    "test_a_server_misbehaving_at_random_keeps_the_books_exact",
    "test_a_slow_server_gets_many_requests_in_flight_on_a_few_connections",
    "test_a_stall_mid_pipeline_is_one_failure_and_the_rest_go_again",
    "make",
    "sink",
    "test_200_delivers_everything_over_keep_alive",
    "test_413_before_the_body_is_read_is_a_send_error_and_never_retried",
    "test_413_is_a_send_error_and_never_retried",
    "test_429_forms",
    "test_bad_tls_file_is_a_configuration_error",
    "test_capture_event_builds_an_envelope",
    "test_close_keeps_its_deadline_and_counts_the_rest",
    "test_close_stops_accepting",
    "test_close_with_requests_in_flight_leaves_final_books",
    "test_closed_without_answer_is_retried",
    "test_compressed_bodies",
    "test_connection_refused_is_retried_then_network_error",
    "test_flush_keeps_its_deadline",
    "test_fork_child_starts_empty",
    "test_hang_on_every_try_ends_as_network_error",
    "test_hang_past_the_timeout_is_retried",
    "test_http_through_proxy_option",
    "test_https_through_proxy_tunnel",
    "test_other_http_errors_are_send_errors",
    "test_proxy_from_environment_and_no_proxy",
    "test_queue_overflow_is_counted",
    "test_rate_limit_header_on_200_blocks_that_category",
    "test_recorded_losses_are_reported",
    "test_reset_mid_body_is_retried",
    "test_spool_bound_evicts_the_oldest_as_cache_overflow",
    "test_spool_drains_when_the_server_comes_back",
    "test_spool_fork_child_spools_its_own_and_leaves_the_parents",
    "test_spool_keeps_what_a_down_server_did_not_take_for_the_next_start",
    "test_spool_sets_damaged_and_foreign_files_aside",
    "test_spool_two_live_transports_send_nothing_twice",
    "test_stale_resend_keeps_the_first_deadline",
    "test_tls_client_certificate",
    "test_tls_host_name_is_checked",
    "test_tls_unknown_ca_is_refused",
    "test_tls_verification_can_be_turned_off",
    "test_tls_with_custom_ca",
    "tls_sink",
    "traits",
]
