<?php
/**
 * Meet links (routes, filters, the first-time patient e-mail) and the mail relay.
 *
 * @package KC_Sidecar
 */

/**
 * @covers KC_Sidecar_Meet
 * @covers KC_Sidecar_Mail
 */
class MeetMailTest extends KC_Test_Case {

	const URL = 'https://meet.google.com/abc-defg-hij';

	protected function setUp(): void {
		parent::setUp();
		KC_Test::user( 3, 'Dr Anna Schmidt', 'anna@example.com', array( 'kiviCare_doctor' ), 'America/New_York' );
		KC_Test::user( 7, 'Jane Patient', 'jane@example.com', array( 'kiviCare_patient' ) );
		$this->appointment( 36, '2026-11-25 15:00:00', 45 );
	}

	private function put( int $id, array $body ) {
		return KC_Sidecar_Meet::put( $this->request( 'PUT', $body, array( 'id' => (string) $id ) ) );
	}

	public function test_first_store_mails_the_patient_once(): void {
		$this->assertSame( array( 'ok' => true, 'first' => true ), $this->put( 36, array( 'url' => self::URL, 'event_id' => 'evt36', 'calendar_id' => 'c' ) )->get_data() );
		$this->assertCount( 1, KC_Test::$mails );
		list( $to, $subject, $body ) = KC_Test::$mails[0];
		$this->assertSame( 'jane@example.com', $to );
		$this->assertSame( 'Your video consultation link for 2026-11-25', $subject );
		$this->assertStringContainsString( 'Hello Jane Patient', $body );
		$this->assertStringContainsString( 'with Dr Anna Schmidt on 2026-11-25 at 10:00 (America/New_York)', $body );
		$this->assertStringContainsString( self::URL, $body );

		$this->assertSame( array( 'ok' => true, 'first' => false ), $this->put( 36, array( 'url' => self::URL . '?x' ) )->get_data() );
		$this->assertCount( 1, KC_Test::$mails, 'a replaced link sends nothing' );
		$this->assertSame( self::URL . '?x', $this->db->meet[36]['url'] );
	}

	public function test_switched_off_template_sends_nothing(): void {
		update_option( KC_Sidecar_Plugin::OPT_TEMPLATES, array( 'meet' => array( 'enabled' => false ) ) );
		$this->assertTrue( $this->put( 36, array( 'url' => self::URL ) )->get_data()['first'] );
		$this->assertSame( array(), KC_Test::$mails );
	}

	public function test_edited_template_and_placeholders(): void {
		update_option( KC_Sidecar_Plugin::OPT_TEMPLATES, array( 'meet' => array( 'enabled' => true, 'subject' => "Link\r\nBcc: x@y", 'body' => '{meet_link}|{appointment_time}|{previous_date}|{unknown}' ) ) );
		$this->put( 36, array( 'url' => self::URL ) );
		$this->assertSame( 'Link Bcc: x@y', KC_Test::$mails[0][1], 'no header injection through the subject' );
		$this->assertSame( self::URL . '|10:00||{unknown}', KC_Test::$mails[0][2] );
	}

	public function test_bad_requests(): void {
		$this->assertError( 'kc_sidecar_bad_request', 400, $this->put( 36, array( 'url' => 'http://meet.google.com/x' ) ) );
		$this->assertError( 'kc_sidecar_bad_request', 400, $this->put( 36, array( 'url' => 'javascript:alert(1)' ) ) );
		$this->assertError( 'kc_sidecar_bad_request', 400, $this->put( 36, array() ) );
		$this->assertError( 'kc_sidecar_not_found', 404, $this->put( 99, array( 'url' => self::URL ) ) );
		$this->assertSame( array(), $this->db->meet );
	}

	public function test_filters_show_the_link_where_kivicare_looks(): void {
		$this->assertFalse( apply_filters( 'kc_is_video_consultation', false, 36 ) );
		$this->put( 36, array( 'url' => self::URL ) );
		KC_Sidecar_Meet::reset_cache();

		$this->assertTrue( apply_filters( 'kc_is_video_consultation', false, 36 ) );
		$this->assertFalse( apply_filters( 'kc_is_video_consultation', false, 37 ) );

		$item = apply_filters( 'kc_appointment_list_item', array( 'id' => '36', 'video_consultation' => false ), (object) array( 'id' => '36' ) );
		$this->assertTrue( $item['video_consultation'] );
		$this->assertSame( array( 'startUrl' => self::URL, 'joinUrl' => self::URL ), $item['zoom_data'] );
		$this->assertSame( self::URL, $item['google_meet_link'] );

		$data = apply_filters( 'kc_appointment_data', array( 'video_consultation' => false ), 36 );
		$this->assertSame( self::URL, $data['google_meet_link'] );

		$zoom    = array( 'startUrl' => 'https://zoom.example/s', 'joinUrl' => 'https://zoom.example/j' );
		$details = apply_filters( 'kc_appointment_details_data', array( 'id' => 36, 'zoom_data' => $zoom ), (object) array( 'id' => 36 ) );
		$this->assertSame( $zoom, $details['zoom_data'], 'a real Zoom add-on keeps its data' );
		$this->assertSame( self::URL, $details['google_meet_link'] );

		$plain = array( 'id' => '37', 'video_consultation' => false );
		$this->assertSame( $plain, apply_filters( 'kc_appointment_list_item', $plain, (object) array( 'id' => '37' ) ) );
	}

	public function test_delete_forgets_the_link(): void {
		$this->put( 36, array( 'url' => self::URL ) );
		$this->assertSame( array( 'ok' => true ), KC_Sidecar_Meet::delete( $this->request( 'DELETE', '', array( 'id' => '36' ) ) )->get_data() );
		$this->assertFalse( apply_filters( 'kc_is_video_consultation', false, 36 ) );
		$this->assertSame( array(), $this->db->meet );
	}

	public function test_mail_relay(): void {
		$ok = KC_Sidecar_Mail::post( $this->request( 'POST', array( 'to' => array( 'a@example.com', 'b@example.com' ), 'subject' => 'Sync failing', 'text' => "Line 1\nLine 2" ) ) );
		$this->assertSame( array( 'ok' => true ), $ok->get_data() );
		$this->assertSame( array( array( array( 'a@example.com', 'b@example.com' ), 'Sync failing', "Line 1\nLine 2" ) ), KC_Test::$mails );

		KC_Test::$mail_result = false;
		$this->assertError( 'kc_sidecar_mail_failed', 502, KC_Sidecar_Mail::post( $this->request( 'POST', array( 'to' => array( 'a@example.com' ), 'subject' => 's', 'text' => 't' ) ) ) );

		foreach ( array(
			array( 'to' => array(), 'subject' => 's', 'text' => 't' ),
			array( 'to' => array( 'not-an-address' ), 'subject' => 's', 'text' => 't' ),
			array( 'to' => 'a@example.com', 'subject' => 's', 'text' => 't' ),
			array( 'to' => array( 'a@example.com' ), 'subject' => '', 'text' => 't' ),
			array( 'to' => array( 'a@example.com' ), 'subject' => 's' ),
			array( 'to' => array_fill( 0, 51, 'a@example.com' ), 'subject' => 's', 'text' => 't' ),
		) as $body ) {
			$this->assertError( 'kc_sidecar_bad_request', 400, KC_Sidecar_Mail::post( $this->request( 'POST', $body ) ) );
		}
	}
}
