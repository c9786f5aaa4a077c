<?php
/**
 * Hints (queueing, sending, fire-and-forget transport) and single sign-on.
 *
 * @package KC_Sidecar
 */

if ( ! function_exists( 'fastcgi_finish_request' ) ) {
	/**
	 * PHP-FPM's "send the response now" (absent under the CLI); counts its calls.
	 */
	function fastcgi_finish_request() {
		$GLOBALS['kc_test_fastcgi_finished'] = ( $GLOBALS['kc_test_fastcgi_finished'] ?? 0 ) + 1;
		return true;
	}
}

/**
 * @covers KC_Sidecar_Hints
 * @covers KC_Sidecar_SSO
 */
class HintsSsoTest extends KC_Test_Case {

	public function test_kivicare_hooks_queue_one_hint_per_appointment(): void {
		do_action( 'kc_after_create_appointment', 36, array(), null );
		do_action( 'kc_appointment_status_update', '37', 0, null );
		do_action( 'kc_appointment_cancelled', '37' );
		do_action( 'kc_appointment_updated', 36, array(), null, null );
		do_action( 'kc_appointment_deleted', 0, null );
		$this->assertSame( array( '37' => 'kc_appointment_cancelled', '36' => 'kc_appointment_updated' ), KC_Sidecar_Hints::queued() );
		$this->assertSame( array(), KC_Test::$posts, 'nothing is sent during the request' );
	}

	public function test_flush_sends_signed_non_blocking_posts(): void {
		KC_Sidecar_Hints::queue( 'kc_after_create_appointment', 36 );
		KC_Sidecar_Hints::flush();
		$this->assertCount( 1, KC_Test::$posts );
		list( $url, $args ) = KC_Test::$posts[0];
		$this->assertSame( 'https://sidecar.example/hooks/kivicare', $url );
		$this->assertFalse( $args['blocking'] );
		$this->assertLessThanOrEqual( 1, $args['timeout'] );
		$body = json_decode( $args['body'], true );
		$this->assertSame( 'kc_after_create_appointment', $body['event'] );
		$this->assertSame( '36', $body['appointment_id'] );
		$this->assertSame( 'https://clinic.example', $body['site'] );
		$this->assertEqualsWithDelta( time(), $body['sent_at'], 5 );
		$headers = $args['headers'];
		$this->assertTrue( KC_Sidecar_Signing::verify( self::SECRET, 'POST', '/hooks/kivicare', $headers['X-KC-Sidecar-Timestamp'], $headers['X-KC-Sidecar-Signature'], $args['body'] ) );
		$this->assertSame( array(), KC_Sidecar_Hints::queued() );
	}

	public function test_flush_is_capped_and_silent_when_not_configured(): void {
		for ( $i = 1; $i <= 80; $i++ ) {
			KC_Sidecar_Hints::queue( 'kc_appointment_cancelled', $i );
		}
		KC_Sidecar_Hints::flush();
		$this->assertCount( KC_Sidecar_Hints::MAX_PER_REQUEST, KC_Test::$posts );

		KC_Test::$posts = array();
		update_option( KC_Sidecar_Plugin::OPT_SECRET, '' );
		KC_Sidecar_Hints::queue( 'kc_appointment_updated', 5 );
		KC_Sidecar_Hints::flush();
		$this->assertSame( array(), KC_Test::$posts );
		$this->assertSame( array(), KC_Sidecar_Hints::queued() );
	}

	public function test_fire_and_forget_only_touches_our_non_blocking_requests(): void {
		if ( ! class_exists( 'Requests_Transport_fsockopen' ) && ! class_exists( '\WpOrg\Requests\Transport\Fsockopen' ) ) {
			require_once __DIR__ . '/stubs/fsockopen-transport.php';
		}
		$url     = 'http://127.0.0.1:9/hooks/kivicare';
		$data    = '';
		$type    = 'POST';
		$headers = array( 'X-KC-Sidecar-Signature' => 'v1=00' );
		$options = array( 'blocking' => false, 'connect_timeout' => 10 );
		KC_Sidecar_Hints::fire_and_forget( $url, $headers, $data, $type, $options );
		$this->assertStringContainsStringIgnoringCase( 'fsockopen', $options['transport'] );
		$this->assertSame( 1, $options['connect_timeout'] );

		foreach ( array( array( array( 'X-KC-Sidecar-Signature' => 'v1=00' ), true ), array( array(), false ) ) as list( $other_headers, $blocking ) ) {
			$options = array( 'blocking' => $blocking );
			KC_Sidecar_Hints::fire_and_forget( $url, $other_headers, $data, $type, $options );
			$this->assertArrayNotHasKey( 'transport', $options );
		}
	}

	public function test_after_the_response_is_finished_hints_use_the_normal_transport(): void {
		KC_Sidecar_Hints::queue( 'kc_appointment_updated', 9 );
		KC_Sidecar_Hints::flush();
		$this->assertGreaterThanOrEqual( 1, $GLOBALS['kc_test_fastcgi_finished'] );
		$this->assertCount( 1, KC_Test::$posts );
		$url     = 'http://127.0.0.1:9/hooks/kivicare';
		$headers = array( 'X-KC-Sidecar-Signature' => 'v1=00' );
		$data    = '';
		$type    = 'POST';
		$options = array( 'blocking' => false );
		KC_Sidecar_Hints::fire_and_forget( $url, $headers, $data, $type, $options );
		$this->assertArrayNotHasKey( 'transport', $options, 'the client is gone: wait for the 202 (at most 1 s)' );
	}

	public function test_sso_token_payload_and_signature(): void {
		$user = KC_Test::user( 3, 'Anna Schmidt', 'anna@example.com', array( 'kiviCare_doctor' ) );
		$url  = KC_Sidecar_SSO::redirect_url( $user, 1795000000 );
		$this->assertStringStartsWith( 'https://sidecar.example/sso?token=', $url );
		list( $encoded, $mac ) = explode( '.', rawurldecode( substr( $url, strlen( 'https://sidecar.example/sso?token=' ) ) ) );
		$this->assertSame( hash_hmac( 'sha256', "sso\n" . $encoded, self::SECRET ), $mac );
		$payload = json_decode( base64_decode( strtr( $encoded, '-_', '+/' ) ), true );
		$this->assertSame( array( 'uid', 'roles', 'name', 'email', 'exp', 'jti', 'site' ), array_keys( $payload ) );
		$this->assertSame( 3, $payload['uid'] );
		$this->assertSame( array( 'kiviCare_doctor' ), $payload['roles'] );
		$this->assertSame( 'Anna Schmidt', $payload['name'] );
		$this->assertSame( 1795000120, $payload['exp'] );
		$this->assertMatchesRegularExpression( '/^[0-9a-f]{32}$/', $payload['jti'] );
		$this->assertSame( 'https://clinic.example', $payload['site'] );
		$this->assertStringNotContainsString( '=', $encoded );
		$this->assertNotSame( $payload['jti'], KC_Sidecar_SSO::payload( $user )['jti'], 'a fresh jti each time' );
	}

	public function test_staff_roles_and_kivicare_sidebar(): void {
		$this->assertTrue( KC_Sidecar_SSO::is_staff( KC_Test::user( 3, 'D', 'd@example.com', array( 'kiviCare_doctor' ) ) ) );
		$this->assertTrue( KC_Sidecar_SSO::is_staff( KC_Test::user( 1, 'A', 'a@example.com', array( 'administrator' ) ) ) );
		$this->assertFalse( KC_Sidecar_SSO::is_staff( KC_Test::user( 7, 'P', 'p@example.com', array( 'kiviCare_patient' ) ) ) );

		$base   = array( array( 'label' => 'Dashboard', 'type' => 'route', 'link' => '/dashboard', 'iconClass' => '', 'routeClass' => 'dashboard', 'childrens' => array() ) );
		$doctor = apply_filters( 'kivicare_sidebar_data', $base, 'kiviCare_doctor' );
		$this->assertCount( 2, $doctor );
		$this->assertSame( 'href', $doctor[1]['type'] );
		$this->assertSame( 'Google Calendar', $doctor[1]['label'] );
		$this->assertSame( 'https://clinic.example/wp-admin/index.php?page=kc-sidecar-connect', $doctor[1]['link'] );
		$this->assertSame( $base, apply_filters( 'kivicare_sidebar_data', $base, 'kiviCare_patient' ) );
		update_option( KC_Sidecar_Plugin::OPT_URL, '' );
		$this->assertSame( $base, apply_filters( 'kivicare_sidebar_data', $base, 'kiviCare_doctor' ), 'hidden until configured' );
	}
}
